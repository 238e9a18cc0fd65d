package secretbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	k, err := New(GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	a := k.SealString("hunter22", "devices.device_secret:p/d")
	b := k.SealString("hunter22", "devices.device_secret:p/d")
	if a == b {
		t.Fatal("two seals of the same value are equal (nonce reused)")
	}
	if strings.Contains(a, "hunter22") || !strings.HasPrefix(a, Prefix+k.ActiveID()+":") {
		t.Fatalf("sealed %q", a)
	}
	got, err := k.OpenString(a, "devices.device_secret:p/d")
	if err != nil || got != "hunter22" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := k.OpenString(a, "devices.device_secret:p/x"); !errors.Is(err, ErrOpen) {
		t.Fatalf("Open with other associated data = %v, want ErrOpen", err)
	}
	tampered := a[:len(a)-2] + "AA"
	if tampered == a {
		tampered = a[:len(a)-2] + "BB"
	}
	if _, err := k.OpenString(tampered, "devices.device_secret:p/d"); !errors.Is(err, ErrOpen) {
		t.Fatalf("Open of a tampered value = %v, want ErrOpen", err)
	}
	if _, err := k.OpenString("plaintext", "x"); !errors.Is(err, ErrOpen) {
		t.Fatalf("Open of plaintext = %v, want ErrOpen", err)
	}
	other, _ := New(GenerateKey())
	if _, err := other.OpenString(a, "devices.device_secret:p/d"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Open with another keyring = %v, want ErrUnknownKey", err)
	}
}

func TestRotationKeepsOldKeys(t *testing.T) {
	old, newer := GenerateKey(), GenerateKey()
	k1, _ := New(old)
	sealed := k1.SealString("s3cretvalue", "a")
	k2, err := New(old, newer)
	if err != nil {
		t.Fatal(err)
	}
	if k2.ActiveID() != KeyID(newer) || !k2.NeedsReseal(sealed) {
		t.Fatalf("active %s, NeedsReseal %v", k2.ActiveID(), k2.NeedsReseal(sealed))
	}
	if got, err := k2.OpenString(sealed, "a"); err != nil || got != "s3cretvalue" {
		t.Fatalf("old value under the rotated keyring = %q, %v", got, err)
	}
	if k2.NeedsReseal(k2.SealString("x", "a")) {
		t.Fatal("a fresh seal needs a reseal")
	}
}

func TestKeyFile(t *testing.T) {
	old := umask(0o022)
	defer umask(old)
	path := filepath.Join(t.TempDir(), "sub", "secret.key")
	if _, _, err := LoadFile(path, false); err == nil {
		t.Fatal("LoadFile of a missing file without create succeeded")
	}
	k, created, err := LoadFile(path, true)
	if err != nil || !created {
		t.Fatalf("LoadFile create = %v, %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	k2, created, err := LoadFile(path, true)
	if err != nil || created || k2.ActiveID() != k.ActiveID() {
		t.Fatalf("reload = %v, %v, %v", k2.IDs(), created, err)
	}
	k3, err := AddKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if ids := k3.IDs(); len(ids) != 2 || ids[0] != k.ActiveID() || k3.ActiveID() == k.ActiveID() {
		t.Fatalf("after AddKey ids %v", ids)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadFile(path, true); !errors.Is(err, ErrKeyFile) {
		t.Fatalf("LoadFile of a 0644 file = %v, want ErrKeyFile", err)
	}
}

func TestParse(t *testing.T) {
	raw := GenerateKey()
	for _, tc := range []struct {
		name, text string
		ok         bool
	}{
		{"one key", "# c\n\n" + Line(raw), true},
		{"no key", "# only a comment\n", false},
		{"short key", "k1 AAAA\n", false},
		{"not base64", "k1 !!!\n", false},
		{"no id", Line(raw)[9:], false},
		{"duplicate", Line(raw) + Line(raw), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text))
			if tc.ok != (err == nil) {
				t.Fatalf("Parse = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrKeyFile) {
				t.Fatalf("Parse error %v is not ErrKeyFile", err)
			}
		})
	}
	if k, err := FromEnvText(Line(GenerateKey()) + ";" + Line(raw)); err != nil || k.ActiveID() != KeyID(raw) {
		t.Fatalf("FromEnvText = %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	k, _ := New(make([]byte, KeySize))
	f.Add(k.SealString("value", "aad"), "aad")
	f.Add("cg1::", "")
	f.Add("cg1:"+k.ActiveID()+":AAAA", "x")
	f.Fuzz(func(t *testing.T, s, aad string) {
		_, _ = k.Open(s, aad) // must not panic
	})
}
