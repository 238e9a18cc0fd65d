package gateway

import (
	"context"
	"encoding/hex"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/auth/symmetric"
	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/presence"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/replay"
	gomsg "github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// lifetimeRegistry is a registry of one product whose devices a test can
// revoke (bump the generation of).
type lifetimeRegistry struct {
	mu   sync.Mutex
	devs map[string]registry.Device // guarded by mu
}

func (r *lifetimeRegistry) GetProduct(_ context.Context, pk string) (registry.Product, error) {
	if pk != "pk1" {
		return registry.Product{}, registry.ErrNotFound
	}
	return registry.Product{ProductKey: pk}, nil
}

func (r *lifetimeRegistry) GetDevice(_ context.Context, pk, dk string) (registry.Device, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.devs[dk]
	if pk != "pk1" || !ok {
		return registry.Device{}, registry.ErrNotFound
	}
	return d, nil
}

func (r *lifetimeRegistry) add(dk string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.devs == nil {
		r.devs = map[string]registry.Device{}
	}
	r.devs[dk] = registry.Device{ProductKey: "pk1", DeviceKey: dk, DeviceSecret: registry.Secret("secret-" + dk), Enabled: true}
}

func (r *lifetimeRegistry) setLastSeen(dk string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.devs[dk]
	d.LastSeenAt = at
	r.devs[dk] = d
}

func (r *lifetimeRegistry) disable(dk string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.devs[dk]
	d.Enabled = false
	r.devs[dk] = d
}

func (r *lifetimeRegistry) remove(dk string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.devs, dk)
}

func (r *lifetimeRegistry) revoke(dk string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.devs[dk]
	d.Generation++
	r.devs[dk] = d
}

// memIngest stores uplinks in memory.
type memIngest struct {
	mu     sync.Mutex
	msgs   []message.Message // guarded by mu
	states int               // guarded by mu
}

func (m *memIngest) Append(ctx context.Context, msg *message.Message) error {
	return m.AppendState(ctx, msg, nil)
}

func (m *memIngest) AppendState(_ context.Context, msg *message.Message, st *replay.State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if msg != nil {
		m.msgs = append(m.msgs, *msg)
		msg.ID = int64(len(m.msgs))
	}
	if st != nil {
		m.states++
	}
	return nil
}

// lifetimeRig is a Gateway on a test clock.
type lifetimeRig struct {
	t     *testing.T
	g     *Gateway
	reg   *lifetimeRegistry
	codec *token.Codec
	start time.Time
	mid   uint16
}

func newLifetimeRig(t *testing.T, ttl, maxAge time.Duration) *lifetimeRig {
	codec, err := token.NewCodec([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1_700_000_000, 0)
	r := &lifetimeRig{t: t, reg: &lifetimeRegistry{}, codec: codec, start: start}
	r.g = New(Options{Registry: r.reg, Tokens: codec, Ingest: &memIngest{}, Presence: presence.NewTracker(),
		TokenTTL: ttl, TokenMaxAge: maxAge, OnlineLifetime: time.Minute, SymmetricOnPlain: true,
		Started: start.Add(-time.Hour), Now: func() time.Time { return start }})
	return r
}

// plainToken issues a plain token for dk at the rig's start, as /auth does.
func (r *lifetimeRig) plainToken(dk string, ttl time.Duration) string {
	r.reg.add(dk)
	tok, err := r.codec.Issue(token.Claims{ProductKey: "pk1", DeviceKey: dk, IssuedAt: r.start, ExpiresAt: r.start.Add(ttl)})
	if err != nil {
		r.t.Fatal(err)
	}
	return tok
}

func (r *lifetimeRig) request(at time.Time, dk string, opts gomsg.Options, payload []byte) codes.Code {
	r.t.Helper()
	r.mid++
	req := &coapx.Request{Peer: netip.MustParseAddrPort("127.0.0.1:5000"), Type: gomsg.Confirmable, Code: codes.POST,
		MessageID: r.mid, Path: []string{"topic", "pk1", dk, "user", "data"}, Options: opts, Payload: payload, Received: at}
	return r.g.ServeCoAP(context.Background(), req).Code
}

func (r *lifetimeRig) publishPlain(at time.Time, dk, tok string) codes.Code {
	r.t.Helper()
	return r.request(at, dk, gomsg.Options{{ID: coapx.OptionAuthToken, Value: []byte(tok)}}, []byte("x"))
}

// symSession is a symmetric-mode session issued at the rig's start.
type symSession struct {
	dk, tok string
	key     symmetric.Key
	seq     uint64
}

func (r *lifetimeRig) symmetricSession(dk string, ttl time.Duration) *symSession {
	r.reg.add(dk)
	random := [8]byte{1, 2, 3, 4, 5, 6, 7, byte(len(dk))}
	tok, err := r.codec.Issue(token.Claims{ProductKey: "pk1", DeviceKey: dk, IssuedAt: r.start, ExpiresAt: r.start.Add(ttl),
		Symmetric: true, Random: random, SeqOffset: 1})
	if err != nil {
		r.t.Fatal(err)
	}
	return &symSession{dk: dk, tok: tok, key: symmetric.SessionKey("secret-"+dk, hex.EncodeToString(random[:])), seq: 1}
}

func (r *lifetimeRig) publishSym(at time.Time, s *symSession) codes.Code {
	r.t.Helper()
	body, err := symmetric.Encrypt(s.key, []byte(symmetric.IV), []byte(`{"id":"1"}`))
	if err != nil {
		r.t.Fatal(err)
	}
	code := r.request(at, s.dk, gomsg.Options{{ID: coapx.OptionAuthToken, Value: []byte(s.tok)},
		{ID: coapx.OptionSeq, Value: symmetric.EncryptSeq(s.key, s.seq)}}, body)
	s.seq++
	return code
}

// TestTokenLifetimeSlides: with a test clock, a device that publishes at
// intervals shorter than the token lifetime keeps getting 2.04 over five
// lifetimes (plain token and symmetric session), one idle for longer than
// the lifetime gets 4.01, revocation cuts an active device off at once, and
// the optional absolute cap ends even an active token.
func TestTokenLifetimeSlides(t *testing.T) {
	const ttl = time.Hour
	step := ttl * 2 / 3 // shorter than the lifetime, longer than half of it
	t.Run("active devices over five lifetimes", func(t *testing.T) {
		r := newLifetimeRig(t, ttl, 0)
		plain := r.plainToken("active", ttl)
		sym := r.symmetricSession("active_sym", ttl)
		n := 0
		for at := r.start; at.Before(r.start.Add(5*ttl + step)); at = at.Add(step) {
			if code := r.publishPlain(at, "active", plain); code != codes.Changed {
				t.Fatalf("plain token at +%v: %v, want 2.04", at.Sub(r.start), code)
			}
			if code := r.publishSym(at, sym); code != codes.Changed {
				t.Fatalf("symmetric session at +%v: %v, want 2.04", at.Sub(r.start), code)
			}
			n++
		}
		if last := r.start.Add(time.Duration(n-1) * step); last.Sub(r.start) <= 5*ttl {
			t.Fatalf("last publish at +%v: not past five lifetimes", last.Sub(r.start))
		}
		// Then silence for longer than the lifetime: both are cut off.
		idleAt := r.start.Add(time.Duration(n-1)*step + ttl + time.Second)
		if code := r.publishPlain(idleAt, "active", plain); code != codes.Unauthorized {
			t.Fatalf("plain token after a lifetime of silence: %v, want 4.01", code)
		}
		if code := r.publishSym(idleAt, sym); code != codes.Unauthorized {
			t.Fatalf("symmetric session after a lifetime of silence: %v, want 4.01", code)
		}
	})
	t.Run("idle device past the lifetime", func(t *testing.T) {
		r := newLifetimeRig(t, ttl, 0)
		plain := r.plainToken("idle", ttl)
		sym := r.symmetricSession("idle_sym", ttl)
		if code := r.publishPlain(r.start.Add(ttl-time.Second), "idle", plain); code != codes.Changed {
			t.Fatalf("plain token within its lifetime: %v", code)
		}
		if code := r.publishPlain(r.start.Add(2*ttl), "idle", plain); code != codes.Unauthorized {
			t.Fatalf("plain token a lifetime after its last uplink: %v, want 4.01", code)
		}
		if code := r.publishSym(r.start.Add(ttl), sym); code != codes.Unauthorized {
			t.Fatalf("unused symmetric session at its expiry: %v, want 4.01", code)
		}
	})
	t.Run("revoke-tokens cuts off an active device at once", func(t *testing.T) {
		r := newLifetimeRig(t, ttl, 0)
		plain := r.plainToken("revoked", ttl)
		sym := r.symmetricSession("revoked_sym", ttl)
		at := r.start
		for range 4 {
			at = at.Add(step)
			if r.publishPlain(at, "revoked", plain) != codes.Changed || r.publishSym(at, sym) != codes.Changed {
				t.Fatalf("active device at +%v refused", at.Sub(r.start))
			}
		}
		for _, dk := range []string{"revoked", "revoked_sym"} {
			r.reg.revoke(dk)
			r.g.Invalidate("pk1", dk) // what the API does after revoke-tokens
		}
		at = at.Add(time.Second)
		if code := r.publishPlain(at, "revoked", plain); code != codes.Unauthorized {
			t.Fatalf("plain token after revoke-tokens: %v, want 4.01", code)
		}
		if code := r.publishSym(at, sym); code != codes.Unauthorized {
			t.Fatalf("symmetric session after revoke-tokens: %v, want 4.01", code)
		}
	})
	t.Run("only the newest plain token slides", func(t *testing.T) {
		r := newLifetimeRig(t, ttl, 0)
		old := r.plainToken("rekeyed", ttl)
		if code := r.publishPlain(r.start.Add(step), "rekeyed", old); code != codes.Changed {
			t.Fatalf("first token: %v", code)
		}
		// The device gets a newer token and uses it.
		at := r.start.Add(2 * step)
		newer, err := r.codec.Issue(token.Claims{ProductKey: "pk1", DeviceKey: "rekeyed", IssuedAt: at.Truncate(time.Second), ExpiresAt: at.Add(ttl)})
		if err != nil {
			t.Fatal(err)
		}
		for range 6 {
			if code := r.publishPlain(at, "rekeyed", newer); code != codes.Changed {
				t.Fatalf("newer token at +%v: %v", at.Sub(r.start), code)
			}
			// The older token, leaked say, is not kept alive by that activity.
			if code := r.publishPlain(at, "rekeyed", old); code != codes.Unauthorized {
				t.Fatalf("older token past its own lifetime at +%v: %v, want 4.01", at.Sub(r.start), code)
			}
			at = at.Add(step)
		}
	})
	t.Run("disable and delete cut off an active device at once", func(t *testing.T) {
		r := newLifetimeRig(t, ttl, 0)
		for _, c := range []struct {
			dk   string
			cut  func(string)
			want codes.Code
		}{{"disabled", r.reg.disable, codes.Forbidden}, {"deleted", r.reg.remove, codes.Unauthorized}} {
			plain := r.plainToken(c.dk, ttl)
			sym := r.symmetricSession(c.dk+"_sym", ttl)
			at := r.start
			for range 3 {
				at = at.Add(step)
				if r.publishPlain(at, c.dk, plain) != codes.Changed || r.publishSym(at, sym) != codes.Changed {
					t.Fatalf("%s: active device refused at +%v", c.dk, at.Sub(r.start))
				}
			}
			c.cut(c.dk)
			c.cut(c.dk + "_sym")
			r.g.Invalidate("pk1", c.dk)
			r.g.Invalidate("pk1", c.dk+"_sym")
			if code := r.publishPlain(at, c.dk, plain); code != c.want {
				t.Fatalf("%s: plain token: %v, want %v", c.dk, code, c.want)
			}
			if code := r.publishSym(at, sym); code != c.want {
				t.Fatalf("%s: symmetric session: %v, want %v", c.dk, code, c.want)
			}
		}
	})
	t.Run("after a restart the registry's last contact counts", func(t *testing.T) {
		// A fresh gateway (empty presence): the device's last contact is
		// what the nodes flushed to the registry before the restart.
		r := newLifetimeRig(t, ttl, 0)
		plain := r.plainToken("restarted", ttl)
		at := r.start.Add(3 * ttl)
		r.reg.setLastSeen("restarted", at.Add(-ttl+time.Minute))
		if code := r.publishPlain(at, "restarted", plain); code != codes.Changed {
			t.Fatalf("token of a device active before the restart: %v, want 2.04", code)
		}
		r2 := newLifetimeRig(t, ttl, 0)
		plain2 := r2.plainToken("stale", ttl)
		r2.reg.setLastSeen("stale", at.Add(-ttl-time.Minute))
		if code := r2.publishPlain(at, "stale", plain2); code != codes.Unauthorized {
			t.Fatalf("token of a device idle for a lifetime before the restart: %v, want 4.01", code)
		}
	})
	t.Run("absolute cap", func(t *testing.T) {
		r := newLifetimeRig(t, ttl, 3*ttl)
		plain := r.plainToken("capped", ttl)
		at := r.start
		for ; at.Before(r.start.Add(3 * ttl)); at = at.Add(step) {
			if code := r.publishPlain(at, "capped", plain); code != codes.Changed {
				t.Fatalf("capped token at +%v: %v", at.Sub(r.start), code)
			}
		}
		if code := r.publishPlain(at, "capped", plain); code != codes.Unauthorized {
			t.Fatalf("token past token_max_age at +%v: %v, want 4.01", at.Sub(r.start), code)
		}
	})
}
