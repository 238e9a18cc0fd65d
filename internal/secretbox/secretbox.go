// Package secretbox encrypts secrets at rest (device and product secrets,
// the credentials inside forwarding rules) with AES-256-GCM under a key kept
// outside the database.
//
// A Keyring holds one or more 256-bit keys, each with a short identifier.
// The newest key (the last one in the key file) seals; every key opens, so
// after a rotation the old values stay readable until they are re-sealed.
// A sealed value is text:
//
//	cg1:<key id>:<base64url(nonce || ciphertext || tag)>
//
// "cg1" versions the format. The caller passes associated data naming the
// field and row (for example "devices.device_secret:pk/dk"), so a sealed
// value copied into another row or column does not open.
//
// The key file is text, one key per line, "<id> <base64 key>"; blank lines
// and lines starting with '#' are ignored. It is created with mode 0600 and
// refused when group or others may read it.
package secretbox

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Prefix starts every sealed value.
const Prefix = "cg1:"

// KeySize is the length of a key in bytes (AES-256).
const KeySize = 32

// Sentinel errors.
var (
	// ErrUnknownKey means a sealed value names a key the keyring lacks.
	ErrUnknownKey = errors.New("secretbox: sealed with a key not in the key file")
	// ErrOpen means a sealed value is malformed or failed authentication
	// (wrong key, tampered, or moved to another row).
	ErrOpen = errors.New("secretbox: cannot open sealed value")
	// ErrKeyFile means the key file is unusable (syntax, size, mode).
	ErrKeyFile = errors.New("secretbox: bad key file")
)

// key is one keyring entry.
type key struct {
	id   string
	aead cipher.AEAD
}

// Keyring seals with its newest key and opens with any. It is immutable
// and safe for concurrent use.
type Keyring struct {
	keys []key // oldest first; the last one seals
}

// New returns a keyring of raw keys (each KeySize bytes), oldest first.
// IDs are derived from the key bytes.
func New(raw ...[]byte) (*Keyring, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrKeyFile)
	}
	k := &Keyring{}
	for _, r := range raw {
		if err := k.add(KeyID(r), r); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// KeyID is the identifier of a raw key: the first 8 hex digits of its
// SHA-256, so the same key always has the same id and an id reveals nothing
// useful about the key.
func KeyID(raw []byte) string {
	h := sha256.Sum256(append([]byte("coapgate secretbox key id\x00"), raw...))
	return hex.EncodeToString(h[:4])
}

func (k *Keyring) add(id string, raw []byte) error {
	if len(raw) != KeySize {
		return fmt.Errorf("%w: key %s is %d bytes, want %d", ErrKeyFile, id, len(raw), KeySize)
	}
	if id == "" || strings.ContainsAny(id, ": \t") {
		return fmt.Errorf("%w: key id %q", ErrKeyFile, id)
	}
	for _, e := range k.keys {
		if e.id == id {
			return fmt.Errorf("%w: duplicate key id %s", ErrKeyFile, id)
		}
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	k.keys = append(k.keys, key{id: id, aead: aead})
	return nil
}

// ActiveID is the id of the key that seals.
func (k *Keyring) ActiveID() string { return k.keys[len(k.keys)-1].id }

// IDs lists the key ids, oldest first.
func (k *Keyring) IDs() []string {
	out := make([]string, len(k.keys))
	for i, e := range k.keys {
		out[i] = e.id
	}
	return out
}

// Seal encrypts plain under the active key with a random nonce, bound to
// aad.
func (k *Keyring) Seal(plain []byte, aad string) string {
	e := k.keys[len(k.keys)-1]
	buf := make([]byte, e.aead.NonceSize(), e.aead.NonceSize()+len(plain)+e.aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		panic("secretbox: crypto/rand failed: " + err.Error()) // never returns an error on supported platforms
	}
	buf = e.aead.Seal(buf, buf, plain, []byte(aad))
	return Prefix + e.id + ":" + base64.RawURLEncoding.EncodeToString(buf)
}

// SealString is Seal for a string.
func (k *Keyring) SealString(plain, aad string) string { return k.Seal([]byte(plain), aad) }

// Open decrypts a sealed value bound to aad.
func (k *Keyring) Open(sealed, aad string) ([]byte, error) {
	id, body, ok := split(sealed)
	if !ok {
		return nil, fmt.Errorf("%w: not a sealed value", ErrOpen)
	}
	for _, e := range k.keys {
		if e.id != id {
			continue
		}
		raw, err := base64.RawURLEncoding.DecodeString(body)
		if err != nil || len(raw) < e.aead.NonceSize()+e.aead.Overhead() {
			return nil, fmt.Errorf("%w: malformed (%s)", ErrOpen, aad)
		}
		ns := e.aead.NonceSize()
		plain, err := e.aead.Open(nil, raw[:ns], raw[ns:], []byte(aad))
		if err != nil {
			return nil, fmt.Errorf("%w: authentication failed (%s)", ErrOpen, aad)
		}
		return plain, nil
	}
	return nil, fmt.Errorf("%w: key %s (%s)", ErrUnknownKey, id, aad)
}

// OpenString is Open returning a string.
func (k *Keyring) OpenString(sealed, aad string) (string, error) {
	b, err := k.Open(sealed, aad)
	return string(b), err
}

// IsSealed reports whether s has the sealed-value format.
func IsSealed(s string) bool {
	_, _, ok := split(s)
	return ok
}

// SealedWith returns the key id of a sealed value, or "" when s is not one.
func SealedWith(s string) string {
	id, _, _ := split(s)
	return id
}

// NeedsReseal reports whether s is not sealed with the active key.
func (k *Keyring) NeedsReseal(s string) bool { return SealedWith(s) != k.ActiveID() }

func split(s string) (id, body string, ok bool) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return "", "", false
	}
	id, body, ok = strings.Cut(rest, ":")
	return id, body, ok && id != "" && body != ""
}

// GenerateKey returns a new random key.
func GenerateKey() []byte {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		panic("secretbox: crypto/rand failed: " + err.Error())
	}
	return b
}

// Parse reads key file text.
func Parse(text []byte) (*Keyring, error) {
	k := &Keyring{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		id, enc, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: want \"<id> <base64 key>\"", ErrKeyFile, n)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: key is not base64", ErrKeyFile, n)
		}
		if err := k.add(id, raw); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if len(k.keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrKeyFile)
	}
	return k, nil
}

// Line formats one key file line for raw.
func Line(raw []byte) string {
	return KeyID(raw) + " " + base64.StdEncoding.EncodeToString(raw) + "\n"
}

// fileHeader starts a generated key file.
const fileHeader = "# coapgate secret keys: \"<id> <base64 key>\", oldest first; the last one encrypts.\n" +
	"# Keep this file out of backups of the database. Losing it loses every stored secret.\n"

// LoadFile reads the key file at path. With create set, a missing file is
// created (mode 0600, its directory 0700) holding one new key. A file that
// group or others can access is refused.
func LoadFile(path string, create bool) (_ *Keyring, created bool, err error) {
	text, err := readPrivate(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, fmt.Errorf("secretbox: key file dir: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) { // created meanwhile by another process
			k, _, err := LoadFile(path, false)
			return k, false, err
		}
		if err != nil {
			return nil, false, fmt.Errorf("secretbox: create key file: %w", err)
		}
		text = []byte(fileHeader + Line(GenerateKey()))
		if _, err := f.Write(text); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("secretbox: write key file: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("secretbox: write key file: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, false, fmt.Errorf("secretbox: write key file: %w", err)
		}
		created = true
	} else if err != nil {
		return nil, false, err
	}
	k, err := Parse(text)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	return k, created, nil
}

// readPrivate reads path, refusing a file readable by group or others.
func readPrivate(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secretbox: key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secretbox: key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; it must be 0600 (chmod 600 %s)", ErrKeyFile, path, st.Mode().Perm(), path)
	}
	b := make([]byte, 0, st.Size())
	buf := bytes.NewBuffer(b)
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("secretbox: key file: %w", err)
	}
	return buf.Bytes(), nil
}

// AddKey appends a new random key to the key file at path (which must
// exist) and returns the resulting keyring, whose active key is the new
// one. Existing keys stay, so values sealed under them still open.
func AddKey(path string) (*Keyring, error) {
	text, err := readPrivate(path)
	if err != nil {
		return nil, err
	}
	line := Line(GenerateKey())
	if len(text) > 0 && text[len(text)-1] != '\n' {
		line = "\n" + line
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("secretbox: key file: %w", err)
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return nil, fmt.Errorf("secretbox: key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("secretbox: key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("secretbox: key file: %w", err)
	}
	k, _, err := LoadFile(path, false)
	return k, err
}

// FromEnvText parses key file text given in an environment variable or a
// configuration value (same syntax as the file; ';' also separates keys).
func FromEnvText(s string) (*Keyring, error) {
	return Parse([]byte(strings.ReplaceAll(s, ";", "\n")))
}
