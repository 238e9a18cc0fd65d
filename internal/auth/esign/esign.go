// Package esign is dialect E's authentication without DTLS (docs/protocol.md
// §2.2, port 5683): the plain SHA-256 sign of POST /auth/{pk}/{dk} and the
// value of option 2101, the uppercase hex of AES-128-CBC over the ASCII
// "token"+T+"sequence"+N with the key SHA-256(deviceSecret)[8:24].
//
// Implemented from the platform's documents alone: no device of this mode
// was observed. The IV is not published; callers pass it (the gateway's
// default is the dialect-A IV, symmetric.IV).
package esign

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"

	"github.com/coapgate/coapgate/internal/auth/symmetric"
)

// Errors of Open.
var (
	ErrHex    = errors.New("esign: option 2101 is not hex")
	ErrFormat = errors.New("esign: option 2101 is not \"token\"+T+\"sequence\"+N")
)

// MaxOptionLen bounds the hex text of option 2101 accepted by Open.
const MaxOptionLen = 1024

// Sign returns the auth sign of dialect E: uppercase hex SHA-256 of
// "deviceKey"+dk+"lifetime"+lifetime+"productKey"+pk+"secureMode"+secureMode
// followed by the secret (the sorted name+value pairs, secret appended; a
// plain hash, not an HMAC). lifetime and secureMode are the text the device
// sent.
func Sign(pk, dk, lifetime, secureMode, secret string) string {
	sum := sha256.Sum256([]byte("deviceKey" + dk + "lifetime" + lifetime + "productKey" + pk + "secureMode" + secureMode + secret))
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// Verify reports whether sign (hex, any case) is Sign(...), in constant time.
func Verify(pk, dk, lifetime, secureMode, secret, sign string) bool {
	want := Sign(pk, dk, lifetime, secureMode, secret)
	return subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToUpper(sign))) == 1
}

// Key is the option-2101 key of a device: SHA-256(deviceSecret)[8:24].
func Key(deviceSecret string) symmetric.Key { return symmetric.SecretKey(deviceSecret) }

// Seal returns the option 2101 value for token and sequence number n.
func Seal(k symmetric.Key, iv []byte, token string, n uint64) ([]byte, error) {
	ct, err := symmetric.Encrypt(k, iv, []byte("token"+token+"sequence"+strconv.FormatUint(n, 10)))
	if err != nil {
		return nil, err
	}
	return []byte(strings.ToUpper(hex.EncodeToString(ct))), nil
}

// Open decrypts an option 2101 value (hex of either case) and returns the
// token and the sequence number. Crypto failures are symmetric.ErrLength or
// symmetric.ErrPadding (a wrong key, IV or a tampered value).
func Open(k symmetric.Key, iv, opt []byte) (token string, n uint64, err error) {
	if len(opt) == 0 || len(opt) > MaxOptionLen || len(opt)%2 != 0 {
		return "", 0, ErrHex
	}
	ct := make([]byte, len(opt)/2)
	if _, err := hex.Decode(ct, opt); err != nil {
		return "", 0, ErrHex
	}
	plain, err := symmetric.Decrypt(k, iv, ct)
	if err != nil {
		return "", 0, err
	}
	rest, ok := strings.CutPrefix(string(plain), "token")
	if !ok {
		return "", 0, ErrFormat
	}
	// N is digits only, so the last "sequence" is the separator even if
	// the token itself contained the word.
	i := strings.LastIndex(rest, "sequence")
	if i <= 0 {
		return "", 0, ErrFormat
	}
	n, err = symmetric.ParseSeq([]byte(rest[i+len("sequence"):]))
	if err != nil {
		return "", 0, ErrFormat
	}
	return rest[:i], n, nil
}
