// Package devsign computes and checks the device signature of dialect A's
// POST /auth (docs/protocol.md §3.1): every submitted field except sign,
// signmethod, version and resources, sorted by name in ascending byte order,
// concatenated as name+value with no separators, HMAC'd with the device
// secret and hex-encoded.
package devsign

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sort"
	"strings"
)

// Method is a sign method name as sent in the signmethod field.
type Method string

// Supported sign methods; MD5 is the dialect's default.
const (
	HMACMD5    Method = "hmacmd5"
	HMACSHA1   Method = "hmacsha1"
	HMACSHA256 Method = "hmacsha256"
)

// ErrUnknownMethod is returned for a signmethod other than the three above.
var ErrUnknownMethod = errors.New("devsign: unknown sign method")

// excluded lists the fields that are never part of the signed content.
var excluded = map[string]bool{"sign": true, "signmethod": true, "version": true, "resources": true}

// ParseMethod maps a signmethod value to a Method; "" means HMACMD5.
// Matching is case-insensitive, as devices differ in spelling.
func ParseMethod(s string) (Method, error) {
	switch m := Method(strings.ToLower(s)); m {
	case "":
		return HMACMD5, nil
	case HMACMD5, HMACSHA1, HMACSHA256:
		return m, nil
	default:
		return "", fmt.Errorf("%w: %q", ErrUnknownMethod, s)
	}
}

func (m Method) newHash() (func() hash.Hash, error) {
	switch m {
	case HMACMD5, "":
		return md5.New, nil
	case HMACSHA1:
		return sha1.New, nil
	case HMACSHA256:
		return sha256.New, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownMethod, string(m))
}

// Content returns the signed content for fields (name → value as the device
// sent it, numbers already formatted as the device wrote them).
func Content(fields map[string]string) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		if !excluded[k] {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		b.WriteString(k)
		b.WriteString(fields[k])
	}
	return b.String()
}

// Sign returns the lower-case hex signature of fields with secret.
func Sign(m Method, secret string, fields map[string]string) (string, error) {
	nh, err := m.newHash()
	if err != nil {
		return "", err
	}
	mac := hmac.New(nh, []byte(secret))
	mac.Write([]byte(Content(fields)))
	return hex.EncodeToString(mac.Sum(nil)), nil
}

// Verify reports whether sign (hex, any case) is the signature of fields.
// The comparison is constant-time.
func Verify(m Method, secret string, fields map[string]string, sign string) (bool, error) {
	want, err := Sign(m, secret, fields)
	if err != nil {
		return false, err
	}
	got := strings.ToLower(sign)
	return hmac.Equal([]byte(want), []byte(got)), nil
}
