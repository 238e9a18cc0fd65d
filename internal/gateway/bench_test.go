package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/registry"
)

// oneDevice is a registry of one product and one device.
type oneDevice struct{}

func (oneDevice) GetProduct(_ context.Context, pk string) (registry.Product, error) {
	if pk != "a1MZxOdcBnO" {
		return registry.Product{}, registry.ErrNotFound
	}
	return registry.Product{ProductKey: pk}, nil
}

func (oneDevice) GetDevice(_ context.Context, pk, dk string) (registry.Device, error) {
	if pk != "a1MZxOdcBnO" || dk != "test_01" {
		return registry.Device{}, registry.ErrNotFound
	}
	return registry.Device{ProductKey: pk, DeviceKey: dk, DeviceSecret: "devsecret1", Enabled: true}, nil
}

// BenchmarkLookupPSK measures the PSK callback of a handshake for a known
// device (served from the device cache after the first call).
func BenchmarkLookupPSK(b *testing.B) {
	g := New(Options{Registry: oneDevice{}, DeviceCacheTTL: time.Hour})
	id := dtlspsk.Identity{ProductKey: "a1MZxOdcBnO", DeviceKey: "test_01", SecureMode: dtlspsk.ModeDevice, Lifetime: time.Hour}
	want := dtlspsk.Key("devsecret1")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		k, err := g.LookupPSK(ctx, id)
		if err != nil || string(k) != string(want) {
			b.Fatalf("LookupPSK = %x, %v", k, err)
		}
	}
}
