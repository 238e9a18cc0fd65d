package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDeviceListFilter(t *testing.T) {
	e := newTestEnv(t)
	e.createProduct("pa")
	e.createProduct("pb")
	for i := range 12 {
		var d Device
		e.do("POST", "/api/v1/devices", map[string]any{"productKey": "pa", "deviceKey": fmt.Sprintf("d%02d", i), "assetId": fmt.Sprintf("Room-%d", i%3)}).want(t, 201, &d)
		e.rememberSecret(d.DeviceSecret)
	}
	e.createDevice("pb", "d05")
	for _, dk := range []string{"d02", "d07", "d11"} {
		e.presence.Seen("pa", dk, "10.0.0.1:5683", "coap", time.Minute, testNow)
	}
	e.presence.Seen("pb", "d05", "10.0.0.2:5683", "coap", time.Minute, testNow)

	keys := func(path string) ([]string, string) {
		t.Helper()
		var l List[Device]
		e.do("GET", path, nil).want(t, 200, &l)
		var ks []string
		for _, d := range l.Items {
			ks = append(ks, d.ProductKey+"/"+d.DeviceKey)
		}
		return ks, l.NextCursor
	}
	all := func(path string) []string {
		t.Helper()
		var out []string
		after := ""
		for range 20 {
			ks, next := keys(path + "&after=" + after)
			out = append(out, ks...)
			if next == "" {
				return out
			}
			after = next
		}
		t.Fatalf("%s: paging did not end", path)
		return nil
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/api/v1/devices?productKey=pa&online=true", []string{"pa/d02", "pa/d07", "pa/d11"}},
		{"/api/v1/devices?online=true", []string{"pa/d02", "pa/d07", "pa/d11", "pb/d05"}},
		{"/api/v1/devices?productKey=pa&q=D1", []string{"pa/d10", "pa/d11"}},
		{"/api/v1/devices?productKey=pa&q=room-2", []string{"pa/d02", "pa/d05", "pa/d08", "pa/d11"}},
		{"/api/v1/devices?productKey=pa&q=room-2&online=false", []string{"pa/d05", "pa/d08"}},
		{"/api/v1/devices?q=d05", []string{"pa/d05", "pb/d05"}},
		{"/api/v1/devices?productKey=pa&q=nothing", nil},
	} {
		if got, _ := keys(tc.path); !slices.Equal(got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.path, got, tc.want)
		}
		// Paging with limit 1 yields the same devices.
		if got := all(tc.path + "&limit=1"); !slices.Equal(got, tc.want) {
			t.Errorf("%s by pages of 1 = %v, want %v", tc.path, got, tc.want)
		}
	}

	// The scan budget: a page may come back short, even empty, with a
	// cursor to continue from; the devices found are the same.
	defer func(n int) { filterScanMax = n }(filterScanMax)
	filterScanMax = 5
	ks, next := keys("/api/v1/devices?productKey=pa&online=true&q=d1")
	if len(ks) != 0 || next != "d04" {
		t.Fatalf("first budgeted page = %v next %q, want none and next d04", ks, next)
	}
	if got := all("/api/v1/devices?productKey=pa&online=true&q=d1"); !slices.Equal(got, []string{"pa/d11"}) {
		t.Fatalf("budgeted paging = %v", got)
	}
	ks, next = keys("/api/v1/devices?online=true&limit=1")
	if len(ks) != 1 || next != "pa/d02" {
		t.Fatalf("all products: %v next %q, want one device and cursor pa/d02", ks, next)
	}

	for _, bad := range []string{"online=yes", "q=" + strings.Repeat("x", 65)} {
		e.do("GET", "/api/v1/devices?"+bad, nil).wantError(t, http.StatusBadRequest, codeInvalidArgument)
	}
}
