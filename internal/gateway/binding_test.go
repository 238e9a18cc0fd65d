package gateway

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// memRegistry is a Registry of one product and its devices.
type memRegistry struct {
	mu   sync.Mutex
	devs map[string]registry.Device
}

func (m *memRegistry) GetProduct(_ context.Context, pk string) (registry.Product, error) {
	if pk != "pk" {
		return registry.Product{}, registry.ErrNotFound
	}
	return registry.Product{ProductKey: pk}, nil
}

func (m *memRegistry) GetDevice(_ context.Context, pk, dk string) (registry.Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devs[pk+"/"+dk]
	if !ok {
		return registry.Device{}, fmt.Errorf("get %s/%s: %w", pk, dk, registry.ErrNotFound)
	}
	return d, nil
}

func (m *memRegistry) set(d registry.Device) {
	m.mu.Lock()
	m.devs[d.ProductKey+"/"+d.DeviceKey] = d
	m.mu.Unlock()
}

func (m *memRegistry) del(pk, dk string) {
	m.mu.Lock()
	delete(m.devs, pk+"/"+dk)
	m.mu.Unlock()
}

// fakeSession is a bound DTLS-PSK session keyed with key.
type fakeSession struct {
	id      uint64
	ident   *dtlspsk.Identity
	key     []byte
	revoked int
}

func (f *fakeSession) SessionID() uint64              { return f.id }
func (f *fakeSession) WriteDatagram([]byte) error     { return nil }
func (f *fakeSession) Identity() any                  { return f.ident }
func (f *fakeSession) PSKIdentity() *dtlspsk.Identity { return f.ident }
func (f *fakeSession) KeyMatches(k []byte) bool       { return bytes.Equal(f.key, k) }
func (f *fakeSession) Revoke()                        { f.revoked++ }
func (f *fakeSession) request() *coapx.Request {
	return &coapx.Request{Session: f, Received: time.Now()}
}
func newSession(id uint64, dk, secret string) *fakeSession {
	return &fakeSession{id: id, ident: &dtlspsk.Identity{ProductKey: "pk", DeviceKey: dk, SecureMode: dtlspsk.ModeDevice, Lifetime: time.Minute},
		key: dtlspsk.Key(secret)}
}

// TestSessionBinding: a session is bound to the incarnation, generation
// and secret it was keyed with; a device change that breaks the binding
// revokes it (and only it), one that keeps it (the asset ID) does not; the
// per-request check catches a change the gateway was not told about.
func TestSessionBinding(t *testing.T) {
	dev := registry.Device{ProductKey: "pk", DeviceKey: "dk", DeviceSecret: "s1", Enabled: true, Incarnation: 7, Generation: 1}
	changes := []struct {
		name   string
		change func(reg *memRegistry, d registry.Device)
		revoke bool
	}{
		{"asset id", func(reg *memRegistry, d registry.Device) { d.AssetID = "a2"; reg.set(d) }, false},
		{"revoke-tokens", func(reg *memRegistry, d registry.Device) { d.Generation++; reg.set(d) }, true},
		{"rotate-secret", func(reg *memRegistry, d registry.Device) { d.Generation++; d.DeviceSecret = "s2"; reg.set(d) }, true},
		{"secret changed without a generation bump", func(reg *memRegistry, d registry.Device) { d.DeviceSecret = "s2"; reg.set(d) }, true},
		{"disable", func(reg *memRegistry, d registry.Device) { d.Enabled = false; reg.set(d) }, true},
		{"delete", func(reg *memRegistry, d registry.Device) { reg.del(d.ProductKey, d.DeviceKey) }, true},
		{"re-create with the same secret", func(reg *memRegistry, d registry.Device) { d.Incarnation = 8; d.Generation = 0; reg.set(d) }, true},
	}
	for _, tc := range changes {
		t.Run(tc.name, func(t *testing.T) {
			reg := &memRegistry{devs: map[string]registry.Device{}}
			reg.set(dev)
			other := dev
			other.DeviceKey = "dk2"
			reg.set(other)
			g := New(Options{Registry: reg, DeviceCacheTTL: time.Hour})
			s := newSession(1, "dk", "s1")
			bystander := newSession(2, "dk2", "s1")
			if !g.BindSession(s) || !g.BindSession(bystander) {
				t.Fatal("BindSession refused a session keyed with the current secret")
			}
			tc.change(reg, dev)
			g.DeviceChanged(registry.DeviceChange{ProductKey: "pk", DeviceKey: "dk"})
			if got := s.revoked == 1; got != tc.revoke {
				t.Fatalf("revoked %d times, want revoked=%v", s.revoked, tc.revoke)
			}
			if bystander.revoked != 0 {
				t.Fatal("another device's session was revoked")
			}
			if !tc.revoke {
				psk := s.ident
				if _, resp := g.authenticateSession(context.Background(), s.request(), psk); resp != nil {
					t.Fatalf("request on the kept session: %v", resp.Code)
				}
			}
		})
	}
	t.Run("stale secret at establishment", func(t *testing.T) {
		reg := &memRegistry{devs: map[string]registry.Device{}}
		reg.set(dev)
		g := New(Options{Registry: reg})
		s := newSession(1, "dk", "old secret")
		if g.BindSession(s) || s.revoked != 1 {
			t.Fatalf("a session keyed with another secret was bound (revoked %d)", s.revoked)
		}
	})
	t.Run("per-request check", func(t *testing.T) {
		reg := &memRegistry{devs: map[string]registry.Device{}}
		reg.set(dev)
		g := New(Options{Registry: reg}) // no device cache: every request reads the record
		s := newSession(1, "dk", "s1")
		if !g.BindSession(s) {
			t.Fatal("not bound")
		}
		d := dev
		d.Generation++ // changed elsewhere: no DeviceChanged here
		reg.set(d)
		_, resp := g.authenticateSession(context.Background(), s.request(), s.ident)
		if resp == nil || resp.Code != codes.Unauthorized || s.revoked != 1 {
			t.Fatalf("request on a stale session: %v, revoked %d", resp, s.revoked)
		}
	})
}

// TestLiveSessionsOnePerDevice: a device's newer session replaces the
// older one as its push route, and the route table keeps one entry per
// device however many sessions carried it; the older session's end does
// not remove the newer route.
func TestLiveSessionsOnePerDevice(t *testing.T) {
	var l liveSessions
	for i := uint64(1); i <= 100; i++ {
		l.put("pk", "dev1", newSession(i, "dev1", "s"))
	}
	if len(l.byID) != 1 || len(l.byDev) != 1 {
		t.Fatalf("%d entries by session, %d by device", len(l.byID), len(l.byDev))
	}
	l.remove(newSession(7, "dev1", "s"))
	if got := l.get("pk", "dev1"); got == nil || got.SessionID() != 100 {
		t.Fatalf("route after an older session ended: %v", got)
	}
	l.remove(newSession(100, "dev1", "s"))
	if got := l.get("pk", "dev1"); got != nil || len(l.byID) != 0 {
		t.Fatalf("route kept after its session ended: %v, %d", got, len(l.byID))
	}
}

// TestBindingsTable: the bindings of a device are found by device and by
// product whichever of them ended, and the tables empty with the sessions.
func TestBindingsTable(t *testing.T) {
	var b bindings
	bind := func(id uint64, dk string) {
		b.put(&binding{s: newSession(id, dk, "s"), pk: "pk", dk: dk})
	}
	ids := func(xs []*binding) map[uint64]bool {
		m := map[uint64]bool{}
		for _, x := range xs {
			m[x.s.SessionID()] = true
		}
		return m
	}
	for id := uint64(1); id <= 5; id++ {
		bind(id, "dev1")
	}
	bind(6, "dev2")
	if got := ids(b.of("pk", "dev1")); len(got) != 5 || got[6] {
		t.Fatalf("dev1: %v", got)
	}
	if got := ids(b.of("pk", "")); len(got) != 6 {
		t.Fatalf("product: %v", got)
	}
	for _, id := range []uint64{5, 3, 1} { // the list's head, middle, tail
		b.remove(id)
		if b.get(id) != nil || ids(b.of("pk", "dev1"))[id] {
			t.Fatalf("binding %d kept", id)
		}
	}
	if got := ids(b.of("pk", "dev1")); len(got) != 2 || !got[2] || !got[4] {
		t.Fatalf("dev1 after removals: %v", got)
	}
	bind(2, "dev2") // the same session bound again, to another device
	if got := ids(b.of("pk", "dev1")); len(got) != 1 || !got[4] {
		t.Fatalf("dev1 after a rebinding: %v", got)
	}
	for _, id := range []uint64{2, 4, 6} {
		b.remove(id)
	}
	if len(b.byDev) != 0 || len(b.byID) != 0 || len(b.of("pk", "")) != 0 {
		t.Fatalf("tables not empty: %d %d", len(b.byDev), len(b.byID))
	}
}
