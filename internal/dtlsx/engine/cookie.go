package engine

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"time"
)

// cookieLen is the length of a HelloVerifyRequest cookie (a truncated
// HMAC-SHA256, RFC 6347 §4.2.1).
const cookieLen = 16

// cookieJar makes and verifies stateless cookies: HMAC(secret, client
// address and port, ClientHello without its cookie). The secret rotates every
// period; cookies made with the previous secret stay valid for one more
// period, so a client whose cookie exchange straddles a rotation still
// completes. Nothing about a client is stored.
type cookieJar struct {
	cur, prev [32]byte
	rotated   time.Time
	period    time.Duration
}

func newCookieJar(now time.Time, period time.Duration) *cookieJar {
	j := &cookieJar{period: period, rotated: now}
	_, _ = rand.Read(j.cur[:])
	_, _ = rand.Read(j.prev[:])
	return j
}

// rotate replaces the secret when its period has passed.
func (j *cookieJar) rotate(now time.Time) {
	if now.Sub(j.rotated) < j.period {
		return
	}
	j.prev = j.cur
	_, _ = rand.Read(j.cur[:])
	j.rotated = now
}

func (j *cookieJar) mac(secret *[32]byte, addr netip.AddrPort, pre, post []byte) [cookieLen]byte {
	m := hmac.New(sha256.New, secret[:])
	a := addr.Addr().As16()
	m.Write(a[:])
	m.Write([]byte{byte(addr.Port() >> 8), byte(addr.Port())})
	m.Write(pre)
	m.Write(post)
	var out [cookieLen]byte
	copy(out[:], m.Sum(nil))
	return out
}

// make returns the cookie for a ClientHello whose body without the cookie
// vector is pre||post.
func (j *cookieJar) make(addr netip.AddrPort, pre, post []byte) [cookieLen]byte {
	return j.mac(&j.cur, addr, pre, post)
}

// verify reports whether c is the cookie of the current or the previous
// secret for this address and ClientHello.
func (j *cookieJar) verify(c []byte, addr netip.AddrPort, pre, post []byte) bool {
	if len(c) != cookieLen {
		return false
	}
	a := j.mac(&j.cur, addr, pre, post)
	b := j.mac(&j.prev, addr, pre, post)
	return hmac.Equal(c, a[:]) || hmac.Equal(c, b[:])
}
