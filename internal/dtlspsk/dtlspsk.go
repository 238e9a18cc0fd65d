// Package dtlspsk holds dialect E's DTLS 1.2 PSK rules (docs/protocol.md §2): the
// PSK identity "{pk},{dk},{secureMode},{lifetime}", the key derivation
// SHA-256(secret)[8:24], and the reason codes of refused handshakes. It is
// pure: no I/O, no logging.
package dtlspsk

import (
	"crypto/sha256"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/coapgate/coapgate/internal/registry"
)

// Secure modes of the identity (docs/protocol.md §2).
const (
	// ModeDevice keys the session with the device secret.
	ModeDevice = 2
	// ModeProduct keys the session with the product secret; such a session
	// may only activate (fetch the device secret).
	ModeProduct = 3
)

// Lifetime bounds in seconds, inclusive (docs/protocol.md §2).
const (
	MinLifetime = 30
	MaxLifetime = 86400
)

// MaxIdentityLen bounds the identity: two keys, a mode digit, a lifetime of
// at most 5 digits and three commas.
const MaxIdentityLen = 2*registry.MaxKeyLen + 1 + 5 + 3

// KeyLen is the PSK length in bytes.
const KeyLen = 16

// Reasons of refused handshakes: the label values of
// coapgate_dtls_handshake_failures_total{reason} and the log attribute.
const (
	ReasonMalformedIdentity = "malformed_identity"
	ReasonBadLifetime       = "bad_lifetime"
	ReasonUnknownProduct    = "unknown_product"
	ReasonUnknownDevice     = "unknown_device"
	ReasonDisabled          = "disabled_device"
	ReasonModeNotAllowed    = "mode3_not_allowed"
	ReasonBadKey            = "bad_key"
	ReasonStore             = "store_unavailable"
)

// Error is a refused identity; Reason is one of the Reason constants.
type Error struct {
	Reason string
	Msg    string
}

func (e *Error) Error() string { return "dtlspsk: " + e.Reason + ": " + e.Msg }

// Reason returns the reason code of err, or "" when err is not an *Error.
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func refuse(reason, msg string) error { return &Error{Reason: reason, Msg: msg} }

// Identity is a parsed PSK identity.
type Identity struct {
	ProductKey string
	DeviceKey  string
	SecureMode int
	Lifetime   time.Duration
}

// String returns the identity in its wire form.
func (id Identity) String() string {
	return id.ProductKey + "," + id.DeviceKey + "," + strconv.Itoa(id.SecureMode) + "," + strconv.Itoa(int(id.Lifetime/time.Second))
}

// Parse parses "{pk},{dk},{secureMode},{lifetime}" strictly: exactly four
// fields; keys as registry.ValidateProductKey/ValidateDeviceKey accept;
// secureMode "2" or "3"; lifetime a decimal integer without sign or leading
// zero in MinLifetime..MaxLifetime. Errors are *Error with
// ReasonMalformedIdentity or ReasonBadLifetime.
func Parse(b []byte) (Identity, error) {
	if len(b) == 0 || len(b) > MaxIdentityLen {
		return Identity{}, refuse(ReasonMalformedIdentity, "identity empty or longer than "+strconv.Itoa(MaxIdentityLen))
	}
	parts := strings.Split(string(b), ",")
	if len(parts) != 4 {
		return Identity{}, refuse(ReasonMalformedIdentity, "want 4 comma-separated fields, got "+strconv.Itoa(len(parts)))
	}
	pk, dk, mode, lt := parts[0], parts[1], parts[2], parts[3]
	if registry.ValidateProductKey(pk) != nil {
		return Identity{}, refuse(ReasonMalformedIdentity, "bad product key")
	}
	if registry.ValidateDeviceKey(dk) != nil {
		return Identity{}, refuse(ReasonMalformedIdentity, "bad device key")
	}
	var sm int
	switch mode {
	case "2":
		sm = ModeDevice
	case "3":
		sm = ModeProduct
	default:
		return Identity{}, refuse(ReasonMalformedIdentity, "secureMode must be 2 or 3")
	}
	secs, ok := parseLifetime(lt)
	if !ok {
		return Identity{}, refuse(ReasonBadLifetime, "lifetime must be an integer in "+strconv.Itoa(MinLifetime)+".."+strconv.Itoa(MaxLifetime))
	}
	return Identity{ProductKey: pk, DeviceKey: dk, SecureMode: sm, Lifetime: time.Duration(secs) * time.Second}, nil
}

// parseLifetime accepts 1..5 decimal digits, no leading zero, within bounds.
func parseLifetime(s string) (int, bool) {
	if len(s) == 0 || len(s) > 5 || s[0] == '0' {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n >= MinLifetime && n <= MaxLifetime
}

// Key derives the PSK of a device secret (mode 2) or product secret (mode
// 3): SHA-256(secret)[8:24] (docs/protocol.md §2).
func Key(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	k := make([]byte, KeyLen)
	copy(k, sum[8:24])
	return k
}
