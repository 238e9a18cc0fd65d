package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/command"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// BoundSession is a DTLS-PSK session (secureMode 2) as the gateway binds it
// to the device record whose secret keyed it (*native.Session implements
// it). Revoke ends the session at once
// (close_notify; later records are refused) and does not wait. All methods
// are safe for concurrent use.
type BoundSession interface {
	coapx.Session
	PSKIdentity() *dtlspsk.Identity
	Revoke()
}

// keyMatcher is a BoundSession that can tell whether it was keyed with a
// given PSK (constant time): then a secret changed while the handshake ran
// is caught at binding, not only by the generation.
type keyMatcher interface {
	KeyMatches(key []byte) bool
}

// keyOK reports whether s was keyed with the PSK of secret, when s can
// tell.
func keyOK(s BoundSession, secret registry.Secret) bool {
	km, ok := s.(keyMatcher)
	return !ok || km.KeyMatches(dtlspsk.Key(secret.Reveal()))
}

// binding is what a session was established under: the device
// incarnation and generation whose secret keyed it. The bindings of one
// device form a list (prev, next), so that a device with one session costs
// one table entry, not a table of its own.
type binding struct {
	s           BoundSession
	pk, dk      string
	incarnation uint64
	generation  uint32
	prev, next  *binding // the device's other bindings; guarded by bindings.mu
}

// bindings holds the bound sessions of this gateway, by device and by
// session ID.
type bindings struct {
	mu    sync.Mutex
	byDev map[command.DeviceKey]*binding // first of the device's list; guarded by mu
	byID  map[uint64]*binding            // guarded by mu
}

func (b *bindings) put(x *binding) {
	k := command.DeviceKey{ProductKey: x.pk, DeviceKey: x.dk}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.byDev == nil {
		b.byDev, b.byID = map[command.DeviceKey]*binding{}, map[uint64]*binding{}
	}
	if old := b.byID[x.s.SessionID()]; old != nil {
		b.unlink(old)
	}
	x.prev, x.next = nil, b.byDev[k]
	if x.next != nil {
		x.next.prev = x
	}
	b.byDev[k] = x
	b.byID[x.s.SessionID()] = x
}

// unlink takes x out of its device's list and the session table.
func (b *bindings) unlink(x *binding) {
	delete(b.byID, x.s.SessionID())
	if x.next != nil {
		x.next.prev = x.prev
	}
	if x.prev != nil {
		x.prev.next = x.next
	} else {
		k := command.DeviceKey{ProductKey: x.pk, DeviceKey: x.dk}
		if x.next != nil {
			b.byDev[k] = x.next
		} else {
			delete(b.byDev, k)
		}
	}
	x.prev, x.next = nil, nil
}

func (b *bindings) get(id uint64) *binding {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byID[id]
}

func (b *bindings) remove(id uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if x := b.byID[id]; x != nil {
		b.unlink(x)
	}
}

// of returns the bindings of device pk/dk, or of every device of pk when
// dk is "".
func (b *bindings) of(pk, dk string) []*binding {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*binding
	if dk != "" {
		for x := b.byDev[command.DeviceKey{ProductKey: pk, DeviceKey: dk}]; x != nil; x = x.next {
			out = append(out, x)
		}
		return out
	}
	for k, first := range b.byDev {
		if k.ProductKey != pk {
			continue
		}
		for x := first; x != nil; x = x.next {
			out = append(out, x)
		}
	}
	return out
}

// holds reports whether the device record id still carries the binding:
// same incarnation and generation, enabled.
func (x *binding) holds(id identity) bool {
	return id.dev.Enabled && id.dev.Incarnation == x.incarnation && id.dev.Generation == x.generation
}

// BindSession binds a secureMode-2 DTLS session, once it is established,
// to the device record whose secret keyed it; it revokes the session and
// returns false when that record is gone, disabled, or no longer has the
// secret the session was keyed with (it changed during the handshake).
// Other sessions (certificate, activation) are not bound: true.
func (g *Gateway) BindSession(s BoundSession) bool {
	psk := s.PSKIdentity()
	if psk == nil || psk.SecureMode != dtlspsk.ModeDevice {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := g.cache.get(ctx, psk.ProductKey, psk.DeviceKey, g.o.Now())
	if err != nil || !id.dev.Enabled || !keyOK(s, id.dev.DeviceSecret) {
		g.revoke(s, psk.ProductKey, psk.DeviceKey, "stale at establishment")
		return false
	}
	g.bound.put(&binding{s: s, pk: psk.ProductKey, dk: psk.DeviceKey, incarnation: id.dev.Incarnation, generation: id.dev.Generation})
	return true
}

// DeviceChanged applies a device change (registry.ChangeFeed): the cached
// record is dropped, and every DTLS session bound to the device (or, for
// an empty DeviceKey, to any device of the product) is checked against the
// record as it is now and revoked unless it still holds: a rotated
// secret, revoked tokens, a disabled, deleted or re-created device end
// live sessions at once.
func (g *Gateway) DeviceChanged(c registry.DeviceChange) {
	g.cache.Invalidate(c.ProductKey, c.DeviceKey)
	xs := g.bound.of(c.ProductKey, c.DeviceKey)
	if len(xs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, x := range xs {
		id, err := g.cache.get(ctx, x.pk, x.dk, g.o.Now())
		if err == nil && x.holds(id) && keyOK(x.s, id.dev.DeviceSecret) {
			continue
		}
		// A registry error ends the session too: the device reconnects
		// and its handshake checks the record again.
		g.revoke(x.s, x.pk, x.dk, "device changed")
	}
}

// revoke ends a session whose binding no longer holds.
func (g *Gateway) revoke(s BoundSession, pk, dk, why string) {
	g.bound.remove(s.SessionID())
	g.live.remove(s)
	g.m.sessionsRevoked.Inc()
	g.log.Info("dtls session revoked", "productKey", pk, "deviceKey", dk, "session", s.SessionID(), "why", why)
	s.Revoke()
}

// checkBinding refuses (4.01, and revokes the session) a request on a
// bound session whose device record no longer holds its binding: the
// per-request check behind DeviceChanged, which also catches changes made
// on another node once the device cache expires. A session not bound yet
// (BindSession not called by the transport) is bound now.
func (g *Gateway) checkBinding(req *coapx.Request, psk *dtlspsk.Identity, id identity) *coapx.Response {
	bs, ok := req.Session.(BoundSession)
	if !ok {
		return nil
	}
	x := g.bound.get(bs.SessionID())
	if x == nil {
		if g.BindSession(bs) {
			return nil
		}
		return g.tokenFail(req, reasonRevoked, codes.Unauthorized, psk.ProductKey, psk.DeviceKey)
	}
	if !x.holds(id) {
		g.revoke(bs, psk.ProductKey, psk.DeviceKey, "binding no longer holds")
		return g.tokenFail(req, reasonRevoked, codes.Unauthorized, psk.ProductKey, psk.DeviceKey)
	}
	return nil
}
