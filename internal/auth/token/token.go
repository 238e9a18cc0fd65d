// Package token issues and verifies the stateless device tokens returned by
// POST /auth (docs/protocol.md §3.1–3.2). A token is signed with a cluster key, so
// any gateway node holding the key verifies it without shared state; a token
// is revoked by bumping the device's generation counter, which the token
// carries.
//
// Wire form: base64url (no padding) of
//
//	version(1) kid(1) flags(1) issued(4, unix s) expires(4, unix s)
//	generation(4) seqOffset(4) [random(8) if flagSymmetric or flagSignE]
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
	version       = 1
	macLen        = 16
	flagSymmetric = 1 << 0
	flagSignE     = 1 << 1
	// MaxLen is the longest token Issue produces (keys of 32 bytes each);
	// the dialect allows 192 characters.
	MaxLen = 150
	// MaxKeyLen is the longest product or device key a token can carry.
	MaxKeyLen = 32
)

// Claims is what a token asserts.
type Claims struct {
	ProductKey string
	DeviceKey  string
	Generation uint32
	IssuedAt   time.Time
	ExpiresAt  time.Time
	// Symmetric is set for symmetric-encryption sessions (port 5682); then
	// Random and SeqOffset are part of the session.
	Symmetric bool
	Random    [8]byte
	SeqOffset uint32
	// SignE is set for tokens of dialect E's non-DTLS mode (POST
	// /auth/{pk}/{dk}, docs/protocol.md §2.2): usable only inside option 2101.
	// Random is part of the session then too.
	SignE bool
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
// Revocation (generation) is the caller's check: it needs the device.
func (c *Codec) Verify(tok string, now time.Time) (Claims, error) {
	if len(tok) == 0 || len(tok) > 2*MaxLen {
		return Claims{}, ErrMalformed
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return Claims{}, ErrMalformed
	}
	const fixed = 3 + 4*4
	if len(b) < fixed+2+macLen || b[0] != version {
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
		Symmetric:  b[2]&flagSymmetric != 0,
		SignE:      b[2]&flagSignE != 0,
		IssuedAt:   time.Unix(int64(binary.BigEndian.Uint32(b[3:])), 0),
		ExpiresAt:  time.Unix(int64(binary.BigEndian.Uint32(b[7:])), 0),
		Generation: binary.BigEndian.Uint32(b[11:]),
		SeqOffset:  binary.BigEndian.Uint32(b[15:]),
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
	if !now.Before(cl.ExpiresAt) {
		return Claims{}, ErrExpired
	}
	return cl, nil
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
