package token

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	key1 = bytes.Repeat([]byte{1}, 32)
	key2 = bytes.Repeat([]byte{2}, 32)
	t0   = time.Unix(1_800_000_000, 0)
)

func mustCodec(t testing.TB, keys ...[]byte) *Codec {
	t.Helper()
	c, err := NewCodec(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssueVerify(t *testing.T) {
	c := mustCodec(t, key1)
	cases := []Claims{
		{ProductKey: "a1MZxOdcBnO", DeviceKey: "test_01", Incarnation: 0x0123456789abcdef, Generation: 3, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)},
		{ProductKey: "p", DeviceKey: "d", Incarnation: ^uint64(0), Generation: ^uint32(0), IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)},
		{ProductKey: strings.Repeat("p", 32), DeviceKey: strings.Repeat("d", 32), IssuedAt: t0, ExpiresAt: t0.Add(time.Hour),
			Symmetric: true, Random: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, SeqOffset: 77},
		{ProductKey: strings.Repeat("p", 32), DeviceKey: strings.Repeat("d", 32), IssuedAt: t0, ExpiresAt: t0.Add(time.Hour),
			SignE: true, Random: [8]byte{8, 7, 6, 5, 4, 3, 2, 1}},
	}
	for _, cl := range cases {
		tok, err := c.Issue(cl)
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) > MaxLen || len(tok) > 192 {
			t.Fatalf("token length %d exceeds limits", len(tok))
		}
		got, err := c.Verify(tok, t0.Add(time.Minute))
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if got != cl {
			t.Fatalf("claims round trip: got %+v, want %+v", got, cl)
		}
	}
}

func TestSessionFlagsExclusive(t *testing.T) {
	c := mustCodec(t, key1)
	if _, err := c.Issue(Claims{ProductKey: "pk", DeviceKey: "dk", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour), Symmetric: true, SignE: true}); err == nil {
		t.Fatal("a token both symmetric and sign-E was issued")
	}
}

func TestVerifyFailures(t *testing.T) {
	c := mustCodec(t, key1)
	cl := Claims{ProductKey: "pk", DeviceKey: "dk", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	tok, _ := c.Issue(cl)
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x40
		return base64.RawURLEncoding.EncodeToString(b)
	}
	tests := []struct {
		name string
		tok  string
		now  time.Time
		want error
	}{
		{"expired exactly at expiry", tok, t0.Add(time.Hour), ErrExpired},
		{"expired later", tok, t0.Add(48 * time.Hour), ErrExpired},
		{"other key", mustIssue(t, mustCodec(t, key2), cl), t0, ErrSignature},
		{"tampered incarnation", flip(12), t0, ErrSignature},
		{"tampered generation", flip(20), t0, ErrSignature},
		{"tampered device key", flip(len(raw) - macLen - 1), t0, ErrSignature},
		{"tampered mac", flip(len(raw) - 1), t0, ErrSignature},
		{"empty", "", t0, ErrMalformed},
		{"not base64", "!!!!", t0, ErrMalformed},
		{"truncated", tok[:10], t0, ErrMalformed},
		{"bad version", flip(0), t0, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Verify(tt.tok, tt.now); !errors.Is(err, tt.want) {
				t.Fatalf("Verify err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestCanonicalSpelling: the last character of a token whose length is not
// a multiple of 3 bytes has unused low bits; only the spelling with them
// clear is accepted (a decoder that ignores them accepts 4 or 16).
func TestCanonicalSpelling(t *testing.T) {
	c := mustCodec(t, key1)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for _, dk := range []string{"d", "dk", "dk3"} { // three body lengths mod 3
		tok := mustIssue(t, c, Claims{ProductKey: "pk", DeviceKey: dk, Incarnation: 7, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)})
		accepted := 0
		for i := 0; i < len(alphabet); i++ {
			spelling := tok[:len(tok)-1] + alphabet[i:i+1]
			if _, err := c.Verify(spelling, t0); err == nil {
				accepted++
				if spelling != tok {
					t.Errorf("dk %q: non-canonical spelling %q accepted", dk, spelling)
				}
			}
		}
		if accepted != 1 {
			t.Errorf("dk %q: %d spellings accepted, want exactly 1", dk, accepted)
		}
		for _, mangled := range []string{tok[:20] + "\n" + tok[20:], tok[:20] + "\r\n" + tok[20:], tok + "="} {
			if _, err := c.Verify(mangled, t0); !errors.Is(err, ErrMalformed) {
				t.Errorf("dk %q: %q: err = %v, want ErrMalformed", dk, mangled, err)
			}
		}
	}
}

// TestVersion1Legacy: a token of the format without an incarnation (issued
// before it existed) still verifies, marked Legacy with its other claims
// intact, so the caller can bind it by issue time; a tampered one does not.
func TestVersion1Legacy(t *testing.T) {
	c := mustCodec(t, key1)
	old := legacyToken(key1, Claims{ProductKey: "pk", DeviceKey: "dk", Generation: 3, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)})
	cl, err := c.Verify(old, t0)
	if err != nil {
		t.Fatalf("version-1 token: %v", err)
	}
	if !cl.Legacy || cl.ProductKey != "pk" || cl.DeviceKey != "dk" || cl.Generation != 3 || cl.Incarnation != 0 || !cl.IssuedAt.Equal(t0) {
		t.Fatalf("version-1 claims = %+v", cl)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(old)
	raw[12] ^= 1 // the generation, under the MAC
	if _, err := c.Verify(base64.RawURLEncoding.EncodeToString(raw), t0); !errors.Is(err, ErrSignature) {
		t.Fatalf("tampered version-1 token: err = %v, want ErrSignature", err)
	}
	fresh, err := c.Verify(mustIssue(t, c, Claims{ProductKey: "pk", DeviceKey: "dk", Incarnation: 9, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}), t0)
	if err != nil || fresh.Legacy || fresh.Incarnation != 9 {
		t.Fatalf("version-2 token: %+v, %v", fresh, err)
	}
}

// legacyToken encodes cl in the version-1 wire form (no incarnation).
func legacyToken(key []byte, cl Claims) string {
	kid := sha256.Sum256(key)
	b := []byte{versionLegacy, kid[0], 0}
	b = binary.BigEndian.AppendUint32(b, uint32(cl.IssuedAt.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(cl.ExpiresAt.Unix()))
	b = binary.BigEndian.AppendUint32(b, cl.Generation)
	b = binary.BigEndian.AppendUint32(b, cl.SeqOffset)
	b = append(b, byte(len(cl.ProductKey)))
	b = append(b, cl.ProductKey...)
	b = append(b, byte(len(cl.DeviceKey)))
	b = append(b, cl.DeviceKey...)
	return base64.RawURLEncoding.EncodeToString(append(b, mac(key, b)...))
}

func mustIssue(t *testing.T, c *Codec, cl Claims) string {
	t.Helper()
	tok, err := c.Issue(cl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestKeyRotation(t *testing.T) {
	old := mustCodec(t, key1)
	rotated := mustCodec(t, key2, key1) // new key signs, old still verifies
	cl := Claims{ProductKey: "pk", DeviceKey: "dk", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if _, err := rotated.Verify(mustIssue(t, old, cl), t0); err != nil {
		t.Fatalf("token of the old key rejected after rotation: %v", err)
	}
	if _, err := old.Verify(mustIssue(t, rotated, cl), t0); !errors.Is(err, ErrSignature) {
		t.Fatalf("old-only codec accepted a new-key token: %v", err)
	}
}

func TestIssueRejectsLongKeys(t *testing.T) {
	c := mustCodec(t, key1)
	if _, err := c.Issue(Claims{ProductKey: strings.Repeat("p", 33), DeviceKey: "d"}); err == nil {
		t.Fatal("33-byte product key accepted")
	}
	if _, err := NewCodec([]byte("short")); err == nil {
		t.Fatal("short key accepted")
	}
}

func FuzzVerify(f *testing.F) {
	c := mustCodec(f, key1)
	tok, _ := c.Issue(Claims{ProductKey: "pk", DeviceKey: "dk", Incarnation: 42, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour), Symmetric: true})
	f.Add(tok)
	f.Add(tok[:len(tok)-1] + "B") // a sibling spelling of the last character
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		cl, err := c.Verify(s, t0)
		if err != nil {
			return
		}
		// Properties: anything that verifies re-issues to a token that
		// verifies to the same claims, and to the very same text (one
		// spelling per token: Issue is deterministic for one key).
		again, err := c.Issue(cl)
		if err != nil {
			t.Fatalf("verified claims do not re-issue: %v", err)
		}
		if again != s {
			t.Fatalf("a second spelling verified: %q (canonical %q)", s, again)
		}
		cl2, err := c.Verify(again, t0)
		if err != nil || cl2 != cl {
			t.Fatalf("round trip: %+v %v", cl2, err)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	c := mustCodec(b, key1)
	tok, _ := c.Issue(Claims{ProductKey: "a1MZxOdcBnO", DeviceKey: "test_01", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Verify(tok, t0); err != nil {
			b.Fatal(err)
		}
	}
}

func TestLifetimeAlive(t *testing.T) {
	issued := time.Unix(1_000_000, 0)
	cl := Claims{IssuedAt: issued, ExpiresAt: issued.Add(time.Hour)}
	tests := []struct {
		name       string
		l          Lifetime
		lastActive time.Time
		now        time.Time
		alive      bool
	}{
		{"within its own lifetime, never active", Lifetime{Idle: time.Hour}, time.Time{}, issued.Add(59 * time.Minute), true},
		{"at its expiry, never active", Lifetime{Idle: time.Hour}, time.Time{}, issued.Add(time.Hour), false},
		{"active recently, five lifetimes on", Lifetime{Idle: time.Hour}, issued.Add(5 * time.Hour), issued.Add(5*time.Hour + 59*time.Minute), true},
		{"idle for a lifetime", Lifetime{Idle: time.Hour}, issued.Add(5 * time.Hour), issued.Add(6 * time.Hour), false},
		{"under the cap", Lifetime{Idle: time.Hour, MaxAge: 3 * time.Hour}, issued.Add(2 * time.Hour), issued.Add(2*time.Hour + time.Minute), true},
		{"past the cap though active", Lifetime{Idle: time.Hour, MaxAge: 3 * time.Hour}, issued.Add(3 * time.Hour), issued.Add(3 * time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.l.Alive(cl, tt.lastActive, tt.now)
			if (err == nil) != tt.alive || (err != nil && !errors.Is(err, ErrExpired)) {
				t.Fatalf("Alive = %v, want alive=%v", err, tt.alive)
			}
		})
	}
}

func TestParseIgnoresExpiry(t *testing.T) {
	c, err := NewCodec([]byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	issued := time.Unix(1_000_000, 0)
	tok, err := c.Issue(Claims{ProductKey: "p", DeviceKey: "d", IssuedAt: issued, ExpiresAt: issued.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(tok, issued.Add(time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("Verify after expiry: %v", err)
	}
	cl, err := c.Parse(tok)
	if err != nil || cl.DeviceKey != "d" || !cl.ExpiresAt.Equal(issued.Add(time.Minute)) {
		t.Fatalf("Parse = %+v, %v", cl, err)
	}
	if _, err := c.Parse(tok[:len(tok)-2] + "AA"); err == nil {
		t.Fatal("Parse accepted a bad signature")
	}
}
