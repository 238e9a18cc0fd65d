package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/coapgate/coapgate/internal/config"
)

// TestE2EDeviceCacheEntries: auth.device_cache_entries bounds the known
// devices a listener caches. Five devices authenticate; with a bound of 2 the
// cache holds 2 of them, with the default all 5.
func TestE2EDeviceCacheEntries(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bound int // 0: default
		want  float64
	}{{"bound2", 2, 2}, {"default", 0, 5}} {
		t.Run(tc.name, func(t *testing.T) {
			g := startTestGateway(t, func(c *config.Config) {
				if tc.bound > 0 {
					c.Auth.DeviceCacheEntries = tc.bound
				}
			})
			pk := ""
			for i := range 5 {
				d := g.newDevice(pk, fmt.Sprintf("cache%d", i))
				pk = d.pk
				if _, err := g.dial(d).Auth(context.Background()); err != nil {
					t.Fatalf("auth of %s: %v", d.dk, err)
				}
			}
			if got := knownCached(t, g); got != tc.want {
				t.Fatalf("known devices cached: %v, want %v", got, tc.want)
			}
		})
	}
}

// knownCached sums coapgate_device_cache_entries{segment="known"} over
// the node's listeners.
func knownCached(t *testing.T, g *testGateway) float64 {
	t.Helper()
	return scrapeSum(t, "http://"+g.s.APIAddr()+"/metrics", "coapgate_device_cache_entries{", `segment="known"`)
}
