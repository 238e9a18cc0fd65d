// Package token issues and verifies the stateless device tokens returned by
// POST /auth (docs/protocol.md §3.1–3.2). A token is signed with a cluster key, so
// any gateway node holding the key verifies it without shared state. A
// token is bound to the device incarnation it was issued to (a random
// number the registry assigns when the device is created, never repeated
// for a product and device key) and to the device's generation counter,
// which revoke-tokens and rotate-secret bump: the caller compares both with
// the device record.
//
// Wire form: base64url (no padding, canonical: one spelling per token) of
//
//	version(1) kid(1) flags(1) issued(4, unix s) expires(4, unix s)
//	incarnation(8) generation(4) seqOffset(4)
//	(version 1, still verified: no incarnation field)
//	[random(8) if flagSymmetric or flagSignE]
//	len(pk)(1) pk len(dk)(1) dk mac(16)
//
// where mac is HMAC-SHA256(key, everything before it) truncated to 128 bits
// and kid is the first byte of SHA-256(key), so keys can be rotated: the
// first key signs, every configured key verifies.
package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Errors returned by Verify; all of them mean 4.01 to the device.
var (
	ErrMalformed = errors.New("token: malformed")
	ErrSignature = errors.New("token: bad signature")
	ErrExpired   = errors.New("token: expired")
)

const (
	// version 2 added the incarnation. Version 1 tokens (issued before it)
	// still verify, marked Legacy: the caller binds them by issue time
	// instead, so firmware that never authenticates again keeps working
	// across the upgrade.
	version       = 2
	versionLegacy = 1
	macLen        = 16
	flagSymmetric = 1 << 0
	flagSignE     = 1 << 1
	// MaxLen is the longest token Issue produces (keys of 32 bytes each);
	// the dialect allows 192 characters.
	MaxLen = 160
	// MaxKeyLen is the longest product or device key a token can carry.
	MaxKeyLen = 32
)

// Claims is what a token asserts.
type Claims struct {
	ProductKey string
	DeviceKey  string
	// Incarnation and Generation bind the token to the device record it
	// was issued for (registry.Device fields of the same names).
	Incarnation uint64
	Generation  uint32
	IssuedAt    time.Time
	ExpiresAt   time.Time
	// Symmetric is set for symmetric-encryption sessions (port 5682); then
	// Random and SeqOffset are part of the session.
	Symmetric bool
	Random    [8]byte
	SeqOffset uint32
	// SignE is set for tokens of dialect E's non-DTLS mode (POST
	// /auth/{pk}/{dk}, docs/protocol.md §2.2): usable only inside option 2101.
	// Random is part of the session then too.
	SignE bool
	// Legacy is set for a version-1 token, which carries no incarnation:
	// it belongs to the device incarnation that existed when it was issued,
	// so the caller accepts it only for a device created no later than
	// IssuedAt.
	Legacy bool
}

func (cl Claims) hasRandom() bool { return cl.Symmetric || cl.SignE }

// Codec signs and verifies tokens. Safe for concurrent use.
type Codec struct {
	keys [][]byte // keys[0] signs
	kids []byte
}

// NewCodec returns a Codec; keys[0] signs, all keys verify. Each key must be
// at least 16 bytes.
func NewCodec(keys ...[]byte) (*Codec, error) {
	if len(keys) == 0 {
		return nil, errors.New("token: no key")
	}
	c := &Codec{}
	for _, k := range keys {
		if len(k) < 16 {
			return nil, errors.New("token: key shorter than 16 bytes")
		}
		sum := sha256.Sum256(k)
		c.keys = append(c.keys, append([]byte(nil), k...))
		c.kids = append(c.kids, sum[0])
	}
	return c, nil
}

// Issue returns the token for cl.
func (c *Codec) Issue(cl Claims) (string, error) {
	if len(cl.ProductKey) == 0 || len(cl.ProductKey) > MaxKeyLen || len(cl.DeviceKey) == 0 || len(cl.DeviceKey) > MaxKeyLen {
		return "", fmt.Errorf("token: key length out of range (%d, %d)", len(cl.ProductKey), len(cl.DeviceKey))
	}
	if cl.Symmetric && cl.SignE {
		return "", errors.New("token: a token is symmetric or sign-E, not both")
	}
	b := make([]byte, 0, 64+len(cl.ProductKey)+len(cl.DeviceKey))
	var flags byte
	if cl.Symmetric {
		flags |= flagSymmetric
	}
	if cl.SignE {
		flags |= flagSignE
	}
	b = append(b, version, c.kids[0], flags)
	b = binary.BigEndian.AppendUint32(b, unix32(cl.IssuedAt))
	b = binary.BigEndian.AppendUint32(b, unix32(cl.ExpiresAt))
	b = binary.BigEndian.AppendUint64(b, cl.Incarnation)
	b = binary.BigEndian.AppendUint32(b, cl.Generation)
	b = binary.BigEndian.AppendUint32(b, cl.SeqOffset)
	if cl.hasRandom() {
		b = append(b, cl.Random[:]...)
	}
	b = append(b, byte(len(cl.ProductKey)))
	b = append(b, cl.ProductKey...)
	b = append(b, byte(len(cl.DeviceKey)))
	b = append(b, cl.DeviceKey...)
	b = append(b, mac(c.keys[0], b)...)
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func unix32(t time.Time) uint32 {
	s := t.Unix()
	if s < 0 {
		return 0
	}
	if s > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(s)
}

func mac(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)[:macLen]
}

// Verify checks tok's signature and expiry at now and returns its claims.
// The binding (incarnation, generation) is the caller's check: it needs
// the device. The text must be the canonical encoding: unused low bits of
// the last character set, or line breaks, make it malformed, so that each
// token has exactly one spelling.
func (c *Codec) Verify(tok string, now time.Time) (Claims, error) {
	cl, err := c.Parse(tok)
	if err != nil {
		return Claims{}, err
	}
	if !now.Before(cl.ExpiresAt) {
		return Claims{}, ErrExpired
	}
	return cl, nil
}

// Parse checks tok's signature and returns its claims without judging its
// lifetime: a caller whose lifetime slides with the device's activity
// (Alive) decides that itself.
func (c *Codec) Parse(tok string) (Claims, error) {
	if len(tok) == 0 || len(tok) > 2*MaxLen {
		return Claims{}, ErrMalformed
	}
	b, err := decodeStrict(tok)
	if err != nil {
		return Claims{}, ErrMalformed
	}
	fixed := 3 + 4*2 + 8 + 4*2
	if len(b) > 0 && b[0] == versionLegacy {
		fixed = 3 + 4*4
	}
	if len(b) < fixed+2+macLen || (b[0] != version && b[0] != versionLegacy) {
		return Claims{}, ErrMalformed
	}
	body, sig := b[:len(b)-macLen], b[len(b)-macLen:]
	var key []byte
	for i, kid := range c.kids {
		if kid == b[1] && hmac.Equal(mac(c.keys[i], body), sig) {
			key = c.keys[i]
			break
		}
	}
	if key == nil {
		return Claims{}, ErrSignature
	}
	cl := Claims{
		Symmetric: b[2]&flagSymmetric != 0,
		SignE:     b[2]&flagSignE != 0,
		IssuedAt:  time.Unix(int64(binary.BigEndian.Uint32(b[3:])), 0),
		ExpiresAt: time.Unix(int64(binary.BigEndian.Uint32(b[7:])), 0),
	}
	if b[0] == versionLegacy {
		cl.Legacy = true
		cl.Generation = binary.BigEndian.Uint32(b[11:])
		cl.SeqOffset = binary.BigEndian.Uint32(b[15:])
	} else {
		cl.Incarnation = binary.BigEndian.Uint64(b[11:])
		cl.Generation = binary.BigEndian.Uint32(b[19:])
		cl.SeqOffset = binary.BigEndian.Uint32(b[23:])
	}
	if b[2]&^(flagSymmetric|flagSignE) != 0 || cl.Symmetric && cl.SignE {
		return Claims{}, ErrMalformed
	}
	rest := body[fixed:]
	if cl.hasRandom() {
		if len(rest) < 8 {
			return Claims{}, ErrMalformed
		}
		copy(cl.Random[:], rest)
		rest = rest[8:]
	}
	var ok bool
	if cl.ProductKey, rest, ok = lenPrefixed(rest); !ok {
		return Claims{}, ErrMalformed
	}
	if cl.DeviceKey, rest, ok = lenPrefixed(rest); !ok || len(rest) != 0 {
		return Claims{}, ErrMalformed
	}
	return cl, nil
}

// Lifetime is the sliding token lifetime: a token stays valid while its
// device keeps talking. It is valid at now when now is before its own
// expiry (issue time + TTL), or within Idle of the device's last accepted
// contact (lastActive); and, when MaxAge is set, less than MaxAge after it
// was issued, whatever the activity. Revocation is checked apart
// (generation).
type Lifetime struct {
	Idle   time.Duration // the TTL, counted from the last accepted contact
	MaxAge time.Duration // absolute cap from issue time; 0: none
}

// Alive reports whether cl is valid at now (ErrExpired if not) given the
// device's last accepted contact (zero when unknown).
func (l Lifetime) Alive(cl Claims, lastActive, now time.Time) error {
	if l.MaxAge > 0 && !now.Before(cl.IssuedAt.Add(l.MaxAge)) {
		return ErrExpired
	}
	if now.Before(cl.ExpiresAt) {
		return nil
	}
	if !lastActive.IsZero() && now.Before(lastActive.Add(l.Idle)) {
		return nil
	}
	return ErrExpired
}

// decodeStrict decodes base64url without padding and refuses every
// spelling but the canonical one: non-zero unused bits in the last
// character (RFC 4648 §3.5) and the line breaks the decoder skips.
func decodeStrict(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return nil, ErrMalformed
		}
	}
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

func lenPrefixed(b []byte) (string, []byte, bool) {
	if len(b) < 1 {
		return "", nil, false
	}
	n := int(b[0])
	if n == 0 || n > MaxKeyLen || len(b) < 1+n {
		return "", nil, false
	}
	return string(b[1 : 1+n]), b[1+n:], true
}
