// Package symmetric is the payload cipher of dialect A's symmetric-encryption
// mode (docs/protocol.md §3.4, port 5682), also used by dialect E's non-DTLS sign
// option 2101 (§2.2): AES-128-CBC with a fixed IV and PKCS#7 padding
// (RFC 5652 §6.3), the session key derivation and the encrypted sequence
// number of option 2089.
//
// Every function is pure and safe for concurrent use. Decryption is strict:
// a ciphertext that is empty, not a multiple of the block size, or whose
// padding is not exactly PKCS#7 is refused with an error, never a panic.
//
// CBC without a MAC gives confidentiality, not integrity: a tampered
// ciphertext whose padding happens to stay valid decrypts to garbage. The
// dialect has no MAC; callers validate what they decrypt.
package symmetric

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"strconv"
)

// IV is the dialect's fixed initialisation vector: the 16 ASCII bytes
// "543yhjy97ae7fyfg" (docs/protocol.md §3.4).
const IV = "543yhjy97ae7fyfg"

// BlockSize is the AES block size.
const BlockSize = aes.BlockSize

// MaxSeqDigits bounds the decimal sequence number of option 2089 (the
// largest uint64 has 20 digits).
const MaxSeqDigits = 20

// Errors of Decrypt and DecryptSeq.
var (
	ErrLength  = errors.New("symmetric: ciphertext empty or not a multiple of 16 bytes")
	ErrPadding = errors.New("symmetric: bad PKCS#7 padding")
	ErrSeq     = errors.New("symmetric: sequence number is not a decimal number")
	ErrIV      = errors.New("symmetric: IV must be 16 bytes")
)

// Key is an AES-128 key.
type Key [16]byte

// SessionKey derives the symmetric-mode session key: SHA-256(deviceSecret +
// "," + random)[8:24], where random is the 16-hex-character string the
// server returned from POST /auth, taken as ASCII (docs/protocol.md §3.4).
func SessionKey(deviceSecret, random string) Key {
	sum := sha256.Sum256([]byte(deviceSecret + "," + random))
	var k Key
	copy(k[:], sum[8:24])
	return k
}

// SecretKey derives a key from a secret alone: SHA-256(secret)[8:24]
// (dialect E, docs/protocol.md §2).
func SecretKey(secret string) Key {
	sum := sha256.Sum256([]byte(secret))
	var k Key
	copy(k[:], sum[8:24])
	return k
}

// Pad appends PKCS#7 padding: 1..16 bytes of the pad length, a full block
// of 0x10 when len(b) is already a multiple of 16.
func Pad(b []byte) []byte {
	n := BlockSize - len(b)%BlockSize
	out := make([]byte, len(b), len(b)+n)
	copy(out, b)
	for range n {
		out = append(out, byte(n))
	}
	return out
}

// Unpad strips PKCS#7 padding strictly: b must be a non-empty multiple of
// 16 bytes ending in n bytes of value n, 1 <= n <= 16. The result aliases b.
func Unpad(b []byte) ([]byte, error) {
	if len(b) == 0 || len(b)%BlockSize != 0 {
		return nil, ErrLength
	}
	n := int(b[len(b)-1])
	if n < 1 || n > BlockSize {
		return nil, ErrPadding
	}
	// Constant-shape check of the pad bytes.
	var bad byte
	for _, c := range b[len(b)-n:] {
		bad |= c ^ byte(n)
	}
	if bad != 0 {
		return nil, ErrPadding
	}
	return b[:len(b)-n], nil
}

// Encrypt returns AES-128-CBC(key, iv, PKCS#7(plain)). iv must be 16 bytes.
func Encrypt(k Key, iv, plain []byte) ([]byte, error) {
	if len(iv) != BlockSize {
		return nil, ErrIV
	}
	block, _ := aes.NewCipher(k[:]) // a 16-byte key never fails
	out := Pad(plain)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, out)
	return out, nil
}

// Decrypt reverses Encrypt. It returns ErrLength for an empty ciphertext or
// one that is not a multiple of 16 bytes and ErrPadding when the decrypted
// padding is not PKCS#7 (the usual sign of a wrong key or a tampered
// message). ct is not modified.
func Decrypt(k Key, iv, ct []byte) ([]byte, error) {
	if len(iv) != BlockSize {
		return nil, ErrIV
	}
	if len(ct) == 0 || len(ct)%BlockSize != 0 {
		return nil, ErrLength
	}
	block, _ := aes.NewCipher(k[:])
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, ct)
	return Unpad(out)
}

// EncryptSeq returns the value of option 2089 for seq: the decimal ASCII
// string of seq encrypted with the dialect IV.
func EncryptSeq(k Key, seq uint64) []byte {
	b, _ := Encrypt(k, []byte(IV), strconv.AppendUint(nil, seq, 10))
	return b
}

// DecryptSeq decrypts an option 2089 value and parses the sequence number:
// 1..MaxSeqDigits ASCII digits (leading zeros tolerated). Crypto failures
// are ErrLength or ErrPadding, a plaintext that is not a number ErrSeq.
func DecryptSeq(k Key, opt []byte) (uint64, error) {
	plain, err := Decrypt(k, []byte(IV), opt)
	if err != nil {
		return 0, err
	}
	return ParseSeq(plain)
}

// ParseSeq parses a decimal sequence number: 1..MaxSeqDigits ASCII digits
// whose value fits in a uint64.
func ParseSeq(b []byte) (uint64, error) {
	if len(b) == 0 || len(b) > MaxSeqDigits {
		return 0, ErrSeq
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, ErrSeq
		}
	}
	v, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, ErrSeq
	}
	return v, nil
}
