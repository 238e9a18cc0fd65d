package registry

import (
	"crypto/rand"
	"errors"
	"fmt"
)

// ErrInvalid means a key, secret or field value is malformed.
var ErrInvalid = errors.New("registry: invalid")

// MaxKeyLen is the longest product or device key.
const MaxKeyLen = 32

// Secret length bounds accepted by ValidateSecret.
const (
	MinSecretLen = 8
	MaxSecretLen = 128
)

// Lengths of generated keys and secrets.
const (
	productKeyLen = 11
	deviceKeyLen  = 10
	secretLen     = 32
)

// ValidateProductKey reports whether s can be a product key: 1..32 characters
// of [A-Za-z0-9_.@:-]. The alphabet excludes ',' (PSK identities are
// comma-separated, docs/protocol.md §2) and '/', '+', '#' (keys appear as topic
// levels, docs/protocol.md §4). Errors wrap ErrInvalid.
func ValidateProductKey(s string) error { return validateKey("product key", s) }

// ValidateDeviceKey reports whether s can be a device key; the rules are
// those of ValidateProductKey. Errors wrap ErrInvalid.
func ValidateDeviceKey(s string) error { return validateKey("device key", s) }

func validateKey(what, s string) error {
	if len(s) == 0 {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(s) > MaxKeyLen {
		return fmt.Errorf("%w: %s longer than %d characters", ErrInvalid, what, MaxKeyLen)
	}
	for i := 0; i < len(s); i++ {
		if !keyChar(s[i]) {
			return fmt.Errorf("%w: %s %q: character %q not allowed (use A-Z a-z 0-9 _ . @ : -)", ErrInvalid, what, s, s[i])
		}
	}
	return nil
}

func keyChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '_', c == '.', c == '@', c == ':', c == '-':
		return true
	}
	return false
}

// ValidateSecret reports whether s can be a device or product secret given
// by a user (for instance one imported from another platform): 8..128
// printable ASCII characters without spaces. Errors wrap ErrInvalid and
// never contain the secret.
func ValidateSecret(s string) error {
	if len(s) < MinSecretLen || len(s) > MaxSecretLen {
		return fmt.Errorf("%w: secret must be %d..%d characters", ErrInvalid, MinSecretLen, MaxSecretLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("%w: secret must be printable ASCII without spaces", ErrInvalid)
		}
	}
	return nil
}

// NewProductKey returns a random 11-character alphanumeric product key.
func NewProductKey() string { return randomAlnum(productKeyLen) }

// NewDeviceKey returns a random 10-character alphanumeric device key.
func NewDeviceKey() string { return randomAlnum(deviceKeyLen) }

// NewSecret returns a random 32-character alphanumeric secret (about 190
// bits of entropy), the shape of the dialects' device secrets.
func NewSecret() Secret { return Secret(randomAlnum(secretLen)) }

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomAlnum returns n characters drawn uniformly from alnum with
// crypto/rand. Bytes >= 248 (= 4*62) are rejected so that every character
// has the same probability (no modulo bias).
func randomAlnum(n int) string {
	const limit = 256 - 256%len(alnum)
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		// crypto/rand.Read never returns an error (Go 1.24+); it crashes
		// the program if the system source fails.
		rand.Read(buf[:])
		for _, b := range buf {
			if int(b) >= limit {
				continue
			}
			out = append(out, alnum[int(b)%len(alnum)])
			if len(out) == n {
				break
			}
		}
	}
	return string(out)
}
