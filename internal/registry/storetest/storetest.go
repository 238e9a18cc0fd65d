// Package storetest is the conformance suite every registry.Store adapter
// must pass: call Run from the adapter's tests with a constructor that
// returns a fresh, empty store.
//
// The suite tests behaviour through the registry.Store interface only
// (ordering, keyset pagination, sentinel errors, field round trips, times to
// the millisecond), never an adapter's storage details.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/registry"
)

// Run runs the conformance suite. newStore must return a new empty store
// for each call and arrange its cleanup with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) registry.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s registry.Store)
	}{
		{"ProductRoundTrip", testProductRoundTrip},
		{"ProductConflict", testProductConflict},
		{"ProductNotFound", testProductNotFound},
		{"UpdateProduct", testUpdateProduct},
		{"ProductRetention", testProductRetention},
		{"DeleteProduct", testDeleteProduct},
		{"DeleteProductWithDevices", testDeleteProductWithDevices},
		{"ListProductsPaging", testListProductsPaging},
		{"ListProductsDefaultLimit", testListProductsDefaultLimit},
		{"DeviceRoundTrip", testDeviceRoundTrip},
		{"DeviceConflict", testDeviceConflict},
		{"DeviceMissingProduct", testDeviceMissingProduct},
		{"DeviceNotFound", testDeviceNotFound},
		{"UpdateDevice", testUpdateDevice},
		{"DeleteDevice", testDeleteDevice},
		{"ListDevicesOfProduct", testListDevicesOfProduct},
		{"ListAllDevices", testListAllDevices},
		{"TouchDevices", testTouchDevices},
		{"SecretRoundTrip", testSecretRoundTrip},
		{"ConcurrentCreate", testConcurrentCreate},
		{"Incarnation", testIncarnation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

// base is a fixed, millisecond-precise instant in a non-UTC zone, so round
// trips also check that adapters keep the instant, not the zone.
var base = time.Date(2024, 5, 6, 7, 8, 9, 123_000_000, time.FixedZone("UTC+2", 2*3600))

func product(key string) registry.Product {
	return registry.Product{
		ProductKey:          key,
		ProductSecret:       registry.Secret("ps-" + key),
		Name:                "Product " + key,
		DynamicRegistration: true,
		DataFormat:          registry.FormatJSON,
		OnlineLifetime:      90 * time.Second,
		CreatedAt:           base,
	}
}

func device(pk, dk string) registry.Device {
	return registry.Device{
		ProductKey:   pk,
		DeviceKey:    dk,
		DeviceSecret: registry.Secret("ds-" + pk + "-" + dk),
		AssetID:      "asset-" + dk,
		Enabled:      true,
		Generation:   3,
		CreatedAt:    base.Add(time.Minute),
	}
}

func mustCreateProduct(t *testing.T, s registry.Store, p registry.Product) {
	t.Helper()
	if err := s.CreateProduct(context.Background(), p); err != nil {
		t.Fatalf("CreateProduct(%s): %v", p.ProductKey, err)
	}
}

func mustCreateDevice(t *testing.T, s registry.Store, d registry.Device) {
	t.Helper()
	if err := s.CreateDevice(context.Background(), d); err != nil {
		t.Fatalf("CreateDevice(%s/%s): %v", d.ProductKey, d.DeviceKey, err)
	}
}

func mustGetProduct(t *testing.T, s registry.Store, pk string) registry.Product {
	t.Helper()
	p, err := s.GetProduct(context.Background(), pk)
	if err != nil {
		t.Fatalf("GetProduct(%s): %v", pk, err)
	}
	return p
}

func mustGetDevice(t *testing.T, s registry.Store, pk, dk string) registry.Device {
	t.Helper()
	d, err := s.GetDevice(context.Background(), pk, dk)
	if err != nil {
		t.Fatalf("GetDevice(%s/%s): %v", pk, dk, err)
	}
	return d
}

// sameTime reports whether got and want are the same instant to the
// millisecond and got is in UTC (or both are zero).
func sameTime(got, want time.Time) bool {
	if want.IsZero() {
		return got.IsZero()
	}
	return got.Location() == time.UTC && got.Truncate(time.Millisecond).Equal(want.Truncate(time.Millisecond))
}

func checkProduct(t *testing.T, got, want registry.Product) {
	t.Helper()
	if got.ProductKey != want.ProductKey || got.ProductSecret.Reveal() != want.ProductSecret.Reveal() ||
		got.Name != want.Name || got.DynamicRegistration != want.DynamicRegistration ||
		got.DataFormat != want.DataFormat || got.OnlineLifetime != want.OnlineLifetime {
		t.Errorf("product = %+v (secret %q), want %+v (secret %q)",
			got, got.ProductSecret.Reveal(), want, want.ProductSecret.Reveal())
	}
	if !sameTime(got.CreatedAt, want.CreatedAt) {
		t.Errorf("product %s CreatedAt = %v, want %v in UTC", want.ProductKey, got.CreatedAt, want.CreatedAt)
	}
}

func checkDevice(t *testing.T, got, want registry.Device) {
	t.Helper()
	if got.ProductKey != want.ProductKey || got.DeviceKey != want.DeviceKey ||
		got.DeviceSecret.Reveal() != want.DeviceSecret.Reveal() || got.AssetID != want.AssetID ||
		got.Enabled != want.Enabled || got.Generation != want.Generation ||
		got.LastAddress != want.LastAddress {
		t.Errorf("device = %+v (secret %q), want %+v (secret %q)",
			got, got.DeviceSecret.Reveal(), want, want.DeviceSecret.Reveal())
	}
	if got.Incarnation == 0 || (want.Incarnation != 0 && got.Incarnation != want.Incarnation) {
		t.Errorf("device %s/%s Incarnation = %#x, want %#x (non-zero)", want.ProductKey, want.DeviceKey, got.Incarnation, want.Incarnation)
	}
	if !sameTime(got.CreatedAt, want.CreatedAt) {
		t.Errorf("device %s/%s CreatedAt = %v, want %v in UTC", want.ProductKey, want.DeviceKey, got.CreatedAt, want.CreatedAt)
	}
	if !sameTime(got.LastSeenAt, want.LastSeenAt) {
		t.Errorf("device %s/%s LastSeenAt = %v, want %v in UTC", want.ProductKey, want.DeviceKey, got.LastSeenAt, want.LastSeenAt)
	}
}

func productKeys(ps []registry.Product) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.ProductKey
	}
	return out
}

func deviceKeys(ds []registry.Device) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ProductKey + "/" + d.DeviceKey
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testProductRoundTrip(t *testing.T, s registry.Store) {
	tests := []struct {
		name string
		p    registry.Product
	}{
		{"json dynamic", product("pA")},
		{"cbor static no lifetime", registry.Product{
			ProductKey: "pB", ProductSecret: "x", Name: "",
			DataFormat: registry.FormatCBOR, CreatedAt: base.Add(time.Hour),
		}},
		{"long lifetime", registry.Product{
			ProductKey: "pC", ProductSecret: "y", Name: "Ünïcødé 名前",
			DataFormat: registry.FormatJSON, OnlineLifetime: 36 * time.Hour, CreatedAt: base,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustCreateProduct(t, s, tt.p)
			checkProduct(t, mustGetProduct(t, s, tt.p.ProductKey), tt.p)
		})
	}
}

func testProductConflict(t *testing.T, s registry.Store) {
	mustCreateProduct(t, s, product("p1"))
	dup := product("p1")
	dup.Name = "other"
	if err := s.CreateProduct(context.Background(), dup); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("duplicate CreateProduct = %v, want ErrConflict", err)
	}
	checkProduct(t, mustGetProduct(t, s, "p1"), product("p1"))
}

func testProductNotFound(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mustCreateProduct(t, s, product("p1"))
	tests := []struct {
		name string
		call func() error
	}{
		{"get", func() error { _, err := s.GetProduct(ctx, "nope"); return err }},
		{"update", func() error { return s.UpdateProduct(ctx, product("nope")) }},
		{"delete", func() error { return s.DeleteProduct(ctx, "nope") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, registry.ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
		})
	}
}

func testUpdateProduct(t *testing.T, s registry.Store) {
	mustCreateProduct(t, s, product("p1"))
	mustCreateProduct(t, s, product("p2"))
	upd := registry.Product{
		ProductKey:          "p1",
		ProductSecret:       "new-secret",
		Name:                "renamed",
		DynamicRegistration: false,
		DataFormat:          registry.FormatCBOR,
		OnlineLifetime:      5 * time.Minute,
		CreatedAt:           base.Add(24 * time.Hour), // must be ignored
	}
	if err := s.UpdateProduct(context.Background(), upd); err != nil {
		t.Fatalf("UpdateProduct: %v", err)
	}
	want := upd
	want.CreatedAt = base
	checkProduct(t, mustGetProduct(t, s, "p1"), want)
	checkProduct(t, mustGetProduct(t, s, "p2"), product("p2"))
}

// testProductRetention: per-product retention overrides survive create
// and update; nil (inherit) stays distinct from 0 (keep forever).
func testProductRetention(t *testing.T, s registry.Store) {
	ctx := context.Background()
	dur := func(d time.Duration) *time.Duration { return &d }
	p := product("p1")
	p.Retention = registry.Retention{Messages: dur(30 * 24 * time.Hour), Points: dur(0)}
	mustCreateProduct(t, s, p)
	check := func(step string, want registry.Retention) {
		t.Helper()
		got := mustGetProduct(t, s, "p1").Retention
		for _, f := range []struct {
			name      string
			got, want *time.Duration
		}{{"Messages", got.Messages, want.Messages}, {"Points", got.Points, want.Points},
			{"Events", got.Events, want.Events}, {"Commands", got.Commands, want.Commands}} {
			if (f.got == nil) != (f.want == nil) || (f.got != nil && *f.got != *f.want) {
				t.Errorf("%s: Retention.%s = %v, want %v", step, f.name, f.got, f.want)
			}
		}
	}
	check("create", p.Retention)
	p.Retention = registry.Retention{Events: dur(time.Hour), Commands: dur(48 * time.Hour)}
	if err := s.UpdateProduct(ctx, p); err != nil {
		t.Fatalf("UpdateProduct: %v", err)
	}
	check("update", p.Retention)
	checkProduct(t, mustGetProduct(t, s, "p1"), p)
}

func testDeleteProduct(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mustCreateProduct(t, s, product("p1"))
	mustCreateProduct(t, s, product("p2"))
	if err := s.DeleteProduct(ctx, "p1"); err != nil {
		t.Fatalf("DeleteProduct: %v", err)
	}
	if _, err := s.GetProduct(ctx, "p1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetProduct after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteProduct(ctx, "p1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("second DeleteProduct = %v, want ErrNotFound", err)
	}
	mustGetProduct(t, s, "p2")
	// The key is free again.
	mustCreateProduct(t, s, product("p1"))
}

func testDeleteProductWithDevices(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mustCreateProduct(t, s, product("p1"))
	mustCreateDevice(t, s, device("p1", "d1"))
	if err := s.DeleteProduct(ctx, "p1"); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("DeleteProduct with devices = %v, want ErrConflict", err)
	}
	mustGetProduct(t, s, "p1")
	mustGetDevice(t, s, "p1", "d1")
	if err := s.DeleteDevice(ctx, "p1", "d1"); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	if err := s.DeleteProduct(ctx, "p1"); err != nil {
		t.Fatalf("DeleteProduct after its devices: %v", err)
	}
}

func testListProductsPaging(t *testing.T, s registry.Store) {
	ctx := context.Background()
	// Created out of order; listed by key (byte order).
	for _, k := range []string{"pd", "pa", "pe", "pc", "pb"} {
		mustCreateProduct(t, s, product(k))
	}
	all, err := s.ListProducts(ctx, registry.Page{})
	if err != nil {
		t.Fatalf("ListProducts: %v", err)
	}
	if got, want := productKeys(all), []string{"pa", "pb", "pc", "pd", "pe"}; !equalStrings(got, want) {
		t.Fatalf("ListProducts = %v, want %v", got, want)
	}
	checkProduct(t, all[0], product("pa"))

	tests := []struct {
		name string
		page registry.Page
		want []string
	}{
		{"first page", registry.Page{Limit: 2}, []string{"pa", "pb"}},
		{"second page", registry.Page{Limit: 2, After: "pb"}, []string{"pc", "pd"}},
		{"last page", registry.Page{Limit: 2, After: "pd"}, []string{"pe"}},
		{"past the end", registry.Page{Limit: 2, After: "pe"}, nil},
		{"after a missing key", registry.Page{Limit: 10, After: "pbb"}, []string{"pc", "pd", "pe"}},
		{"negative limit means default", registry.Page{Limit: -1, After: "pc"}, []string{"pd", "pe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListProducts(ctx, tt.page)
			if err != nil {
				t.Fatalf("ListProducts(%+v): %v", tt.page, err)
			}
			if !equalStrings(productKeys(got), tt.want) {
				t.Fatalf("ListProducts(%+v) = %v, want %v", tt.page, productKeys(got), tt.want)
			}
		})
	}
}

func testListProductsDefaultLimit(t *testing.T, s registry.Store) {
	ctx := context.Background()
	const n = 105
	for i := range n {
		mustCreateProduct(t, s, product(fmt.Sprintf("p%03d", i)))
	}
	first, err := s.ListProducts(ctx, registry.Page{})
	if err != nil {
		t.Fatalf("ListProducts: %v", err)
	}
	if len(first) != 100 {
		t.Fatalf("default page has %d products, want 100", len(first))
	}
	rest, err := s.ListProducts(ctx, registry.Page{After: first[len(first)-1].ProductKey})
	if err != nil {
		t.Fatalf("ListProducts: %v", err)
	}
	if len(rest) != n-100 || rest[0].ProductKey != "p100" {
		t.Fatalf("second page = %v, want p100..p104", productKeys(rest))
	}
}

func testDeviceRoundTrip(t *testing.T, s registry.Store) {
	mustCreateProduct(t, s, product("p1"))
	seen := device("p1", "seen")
	seen.LastSeenAt = base.Add(2 * time.Minute)
	seen.LastAddress = "192.0.2.7:5683"
	tests := []struct {
		name string
		d    registry.Device
	}{
		{"enabled", device("p1", "d1")},
		{"disabled max generation", registry.Device{
			ProductKey: "p1", DeviceKey: "d2", DeviceSecret: "s2",
			Enabled: false, Generation: ^uint32(0), CreatedAt: base,
		}},
		{"zero generation no asset", registry.Device{
			ProductKey: "p1", DeviceKey: "d3", DeviceSecret: "s3", Enabled: true, CreatedAt: base,
		}},
		{"created with last contact", seen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustCreateDevice(t, s, tt.d)
			checkDevice(t, mustGetDevice(t, s, tt.d.ProductKey, tt.d.DeviceKey), tt.d)
		})
	}
}

func testDeviceConflict(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mustCreateProduct(t, s, product("p1"))
	mustCreateProduct(t, s, product("p2"))
	mustCreateDevice(t, s, device("p1", "d1"))
	dup := device("p1", "d1")
	dup.AssetID = "other"
	if err := s.CreateDevice(ctx, dup); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("duplicate CreateDevice = %v, want ErrConflict", err)
	}
	checkDevice(t, mustGetDevice(t, s, "p1", "d1"), device("p1", "d1"))
	// Device keys are scoped by product.
	mustCreateDevice(t, s, device("p2", "d1"))
}

func testDeviceMissingProduct(t *testing.T, s registry.Store) {
	ctx := context.Background()
	if err := s.CreateDevice(ctx, device("nope", "d1")); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("CreateDevice for a missing product = %v, want ErrNotFound", err)
	}
	if _, err := s.GetDevice(ctx, "nope", "d1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetDevice after failed create = %v, want ErrNotFound", err)
	}
}

func testDeviceNotFound(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mustCreateProduct(t, s, product("p1"))
	mustCreateProduct(t, s, product("p2"))
	mustCreateDevice(t, s, device("p1", "d1"))
	tests := []struct {
		name string
		call func() error
	}{
		{"get missing device", func() error { _, err := s.GetDevice(ctx, "p1", "nope"); return err }},
		{"get in other product", func() error { _, err := s.GetDevice(ctx, "p2", "d1"); return err }},
		{"get missing product", func() error { _, err := s.GetDevice(ctx, "nope", "d1"); return err }},
		{"update", func() error { return s.UpdateDevice(ctx, device("p1", "nope")) }},
		{"update in other product", func() error { return s.UpdateDevice(ctx, device("p2", "d1")) }},
		{"delete", func() error { return s.DeleteDevice(ctx, "p1", "nope") }},
		{"delete in other product", func() error { return s.DeleteDevice(ctx, "p2", "d1") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, registry.ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
		})
	}
	checkDevice(t, mustGetDevice(t, s, "p1", "d1"), device("p1", "d1"))
}

func testUpdateDevice(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mustCreateProduct(t, s, product("p1"))
	mustCreateDevice(t, s, device("p1", "d1"))
	mustCreateDevice(t, s, device("p1", "d2"))
	seenAt := base.Add(10 * time.Minute)
	if err := s.TouchDevices(ctx, []registry.Presence{
		{ProductKey: "p1", DeviceKey: "d1", SeenAt: seenAt, Address: "198.51.100.1:40000"},
	}); err != nil {
		t.Fatalf("TouchDevices: %v", err)
	}

	steps := []struct {
		name   string
		change func(d *registry.Device)
	}{
		{"secret", func(d *registry.Device) { d.DeviceSecret = "rotated" }},
		{"asset", func(d *registry.Device) { d.AssetID = "asset-9" }},
		{"disable", func(d *registry.Device) { d.Enabled = false }},
		{"bump generation", func(d *registry.Device) { d.Generation++ }},
		{"max generation", func(d *registry.Device) { d.Generation = ^uint32(0) }},
		{"enable", func(d *registry.Device) { d.Enabled = true }},
	}
	want := device("p1", "d1")
	want.LastSeenAt = seenAt
	want.LastAddress = "198.51.100.1:40000"
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.change(&want)
			upd := want
			// Fields UpdateDevice does not replace must be ignored.
			upd.CreatedAt = base.Add(48 * time.Hour)
			upd.LastSeenAt = time.Time{}
			upd.LastAddress = "ignored"
			if err := s.UpdateDevice(ctx, upd); err != nil {
				t.Fatalf("UpdateDevice: %v", err)
			}
			checkDevice(t, mustGetDevice(t, s, "p1", "d1"), want)
		})
	}
	checkDevice(t, mustGetDevice(t, s, "p1", "d2"), device("p1", "d2"))
}

func testDeleteDevice(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mustCreateProduct(t, s, product("p1"))
	mustCreateDevice(t, s, device("p1", "d1"))
	mustCreateDevice(t, s, device("p1", "d2"))
	if err := s.DeleteDevice(ctx, "p1", "d1"); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	if _, err := s.GetDevice(ctx, "p1", "d1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetDevice after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteDevice(ctx, "p1", "d1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("second DeleteDevice = %v, want ErrNotFound", err)
	}
	mustGetDevice(t, s, "p1", "d2")
	mustCreateDevice(t, s, device("p1", "d1"))
}

func testListDevicesOfProduct(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mustCreateProduct(t, s, product("p1"))
	mustCreateProduct(t, s, product("p2"))
	mustCreateProduct(t, s, product("p3"))
	for _, dk := range []string{"d4", "d1", "d3", "d5", "d2"} {
		mustCreateDevice(t, s, device("p2", dk))
	}
	mustCreateDevice(t, s, device("p1", "d9"))
	mustCreateDevice(t, s, device("p3", "d0"))

	all, err := s.ListDevices(ctx, "p2", registry.Page{})
	if err != nil {
		t.Fatalf("ListDevices: %v", err)
	}
	if len(all) > 0 {
		checkDevice(t, all[0], device("p2", "d1"))
	}
	tests := []struct {
		name string
		pk   string
		page registry.Page
		want []string
	}{
		{"all", "p2", registry.Page{}, []string{"p2/d1", "p2/d2", "p2/d3", "p2/d4", "p2/d5"}},
		{"first page", "p2", registry.Page{Limit: 2}, []string{"p2/d1", "p2/d2"}},
		{"second page", "p2", registry.Page{Limit: 2, After: "d2"}, []string{"p2/d3", "p2/d4"}},
		{"last page", "p2", registry.Page{Limit: 2, After: "d4"}, []string{"p2/d5"}},
		{"past the end", "p2", registry.Page{Limit: 2, After: "d5"}, nil},
		{"other product", "p1", registry.Page{}, []string{"p1/d9"}},
		{"product without devices lists nothing", "nope", registry.Page{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListDevices(ctx, tt.pk, tt.page)
			if err != nil {
				t.Fatalf("ListDevices(%s, %+v): %v", tt.pk, tt.page, err)
			}
			if !equalStrings(deviceKeys(got), tt.want) {
				t.Fatalf("ListDevices(%s, %+v) = %v, want %v", tt.pk, tt.page, deviceKeys(got), tt.want)
			}
		})
	}
}

func testListAllDevices(t *testing.T, s registry.Store) {
	ctx := context.Background()
	for _, pk := range []string{"pb", "pa", "pc"} {
		mustCreateProduct(t, s, product(pk))
	}
	for _, k := range [][2]string{{"pb", "d2"}, {"pa", "d3"}, {"pc", "d1"}, {"pb", "d1"}, {"pa", "d1"}} {
		mustCreateDevice(t, s, device(k[0], k[1]))
	}
	want := []string{"pa/d1", "pa/d3", "pb/d1", "pb/d2", "pc/d1"}
	all, err := s.ListDevices(ctx, "", registry.Page{})
	if err != nil {
		t.Fatalf("ListDevices: %v", err)
	}
	if !equalStrings(deviceKeys(all), want) {
		t.Fatalf("ListDevices(all) = %v, want %v", deviceKeys(all), want)
	}

	// Walk every page size: the concatenation is always the full listing.
	for limit := 1; limit <= len(want)+1; limit++ {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			var got []string
			after := ""
			for range len(want) + 2 {
				page, err := s.ListDevices(ctx, "", registry.Page{Limit: limit, After: after})
				if err != nil {
					t.Fatalf("ListDevices(after %q): %v", after, err)
				}
				if len(page) > limit {
					t.Fatalf("page of %d devices, limit %d", len(page), limit)
				}
				if len(page) == 0 {
					break
				}
				got = append(got, deviceKeys(page)...)
				last := page[len(page)-1]
				after = last.ProductKey + "/" + last.DeviceKey
			}
			if !equalStrings(got, want) {
				t.Fatalf("paged listing = %v, want %v", got, want)
			}
		})
	}
}

func testTouchDevices(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mustCreateProduct(t, s, product("p1"))
	mustCreateDevice(t, s, device("p1", "d1"))
	mustCreateDevice(t, s, device("p1", "d2"))
	mustCreateDevice(t, s, device("p1", "never"))

	if err := s.TouchDevices(ctx, nil); err != nil {
		t.Fatalf("TouchDevices(nil): %v", err)
	}
	t1 := base.Add(time.Hour)
	t2 := base.Add(2 * time.Hour)
	seen := []registry.Presence{
		{ProductKey: "p1", DeviceKey: "d1", SeenAt: t1, Address: "192.0.2.1:5683"},
		{ProductKey: "p1", DeviceKey: "unknown", SeenAt: t1, Address: "192.0.2.9:5683"},
		{ProductKey: "nope", DeviceKey: "d1", SeenAt: t1, Address: "192.0.2.9:5683"},
		{ProductKey: "p1", DeviceKey: "d2", SeenAt: t2, Address: "[2001:db8::1]:5684"},
	}
	if err := s.TouchDevices(ctx, seen); err != nil {
		t.Fatalf("TouchDevices: %v", err)
	}
	tests := []struct {
		dk       string
		wantSeen time.Time
		wantAddr string
	}{
		{"d1", t1, "192.0.2.1:5683"},
		{"d2", t2, "[2001:db8::1]:5684"},
		{"never", time.Time{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.dk, func(t *testing.T) {
			want := device("p1", tt.dk)
			want.LastSeenAt = tt.wantSeen
			want.LastAddress = tt.wantAddr
			checkDevice(t, mustGetDevice(t, s, "p1", tt.dk), want)
		})
	}
	if _, err := s.GetDevice(ctx, "p1", "unknown"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("TouchDevices created a device: GetDevice = %v, want ErrNotFound", err)
	}

	// A later contact moves last contact forward.
	t3 := t2.Add(time.Minute)
	if err := s.TouchDevices(ctx, []registry.Presence{
		{ProductKey: "p1", DeviceKey: "d1", SeenAt: t3, Address: "192.0.2.1:6000"},
	}); err != nil {
		t.Fatalf("TouchDevices: %v", err)
	}
	want := device("p1", "d1")
	want.LastSeenAt = t3
	want.LastAddress = "192.0.2.1:6000"
	checkDevice(t, mustGetDevice(t, s, "p1", "d1"), want)
}

func testSecretRoundTrip(t *testing.T, s registry.Store) {
	secrets := []struct {
		name   string
		secret registry.Secret
	}{
		{"hex", "0123456789abcdef0123456789ABCDEF"},
		{"punctuation", `a'b"c\d;e--f/*g*/%_?`},
		{"unicode", "sécret-密钥-🔑"},
		{"long", registry.Secret(strings.Repeat("k", 512))},
	}
	for i, tt := range secrets {
		t.Run(tt.name, func(t *testing.T) {
			p := product(fmt.Sprintf("p%d", i))
			p.ProductSecret = tt.secret
			mustCreateProduct(t, s, p)
			if got := mustGetProduct(t, s, p.ProductKey).ProductSecret; got.Reveal() != tt.secret.Reveal() {
				t.Fatalf("product secret = %q, want %q", got.Reveal(), tt.secret.Reveal())
			}
			d := device(p.ProductKey, "d")
			d.DeviceSecret = tt.secret
			mustCreateDevice(t, s, d)
			if got := mustGetDevice(t, s, d.ProductKey, d.DeviceKey).DeviceSecret; got.Reveal() != tt.secret.Reveal() {
				t.Fatalf("device secret = %q, want %q", got.Reveal(), tt.secret.Reveal())
			}
		})
	}
}

func testConcurrentCreate(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mustCreateProduct(t, s, product("p1"))
	const workers = 16
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		ok, confl int
		other     []error
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every worker creates its own device and races for a shared one.
			if err := s.CreateDevice(ctx, device("p1", fmt.Sprintf("own%02d", w))); err != nil {
				mu.Lock()
				other = append(other, err)
				mu.Unlock()
			}
			err := s.CreateDevice(ctx, device("p1", "shared"))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, registry.ErrConflict):
				confl++
			default:
				other = append(other, err)
			}
		}()
	}
	wg.Wait()
	if len(other) > 0 {
		t.Fatalf("unexpected errors: %v", errors.Join(other...))
	}
	if ok != 1 || confl != workers-1 {
		t.Fatalf("shared create: %d succeeded, %d conflicted; want 1 and %d", ok, confl, workers-1)
	}
	all, err := s.ListDevices(ctx, "p1", registry.Page{Limit: 100})
	if err != nil {
		t.Fatalf("ListDevices: %v", err)
	}
	if len(all) != workers+1 {
		t.Fatalf("%d devices stored, want %d", len(all), workers+1)
	}
}

// testIncarnation: an incarnation given to CreateDevice round-trips (all 64
// bits); a zero one is replaced by a random one that differs across a
// delete and re-create of the same keys; UpdateDevice never changes it.
func testIncarnation(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mustCreateProduct(t, s, product("p1"))
	d := device("p1", "d1")
	d.Incarnation = 0xfedcba9876543210
	mustCreateDevice(t, s, d)
	if got := mustGetDevice(t, s, "p1", "d1").Incarnation; got != d.Incarnation {
		t.Fatalf("Incarnation = %#x, want %#x", got, d.Incarnation)
	}
	upd := d
	upd.Incarnation = 1
	upd.Generation++
	if err := s.UpdateDevice(ctx, upd); err != nil {
		t.Fatalf("UpdateDevice: %v", err)
	}
	if got := mustGetDevice(t, s, "p1", "d1").Incarnation; got != d.Incarnation {
		t.Fatalf("UpdateDevice changed Incarnation to %#x", got)
	}
	seen := map[uint64]bool{d.Incarnation: true}
	for i := range 3 {
		if err := s.DeleteDevice(ctx, "p1", "d1"); err != nil {
			t.Fatalf("DeleteDevice: %v", err)
		}
		mustCreateDevice(t, s, device("p1", "d1")) // Incarnation 0: assigned
		got := mustGetDevice(t, s, "p1", "d1").Incarnation
		if got == 0 || seen[got] {
			t.Fatalf("re-create %d: Incarnation %#x is zero or repeats one of %v", i, got, seen)
		}
		seen[got] = true
	}
}
