package native

import (
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/dtlsx/engine"
)

func TestSuiteLabel(t *testing.T) {
	for id, want := range map[uint16]string{
		engine.TLS_PSK_WITH_AES_128_CCM_8:              "psk_aes_128_ccm_8",
		engine.TLS_PSK_WITH_AES_128_CBC_SHA256:         "psk_aes_128_cbc_sha256",
		engine.TLS_RSA_WITH_AES_256_CBC_SHA:            "rsa_aes_256_cbc_sha",
		engine.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: "ecdhe_ecdsa_aes_128_gcm_sha256",
	} {
		if got := suiteLabel(id); got != want {
			t.Errorf("suiteLabel(%#x) = %q, want %q", id, got, want)
		}
	}
}

func TestLifetimeFromIdentity(t *testing.T) {
	if got := lifetime([]byte("pk,dk,2,3600")); got != time.Hour {
		t.Fatalf("lifetime %v", got)
	}
	if got := lifetime(nil); got != 0 {
		t.Fatalf("certificate session lifetime %v", got)
	}
	if got := lifetime([]byte("garbage")); got != 0 {
		t.Fatalf("malformed identity lifetime %v", got)
	}
}

// TestCompactKey: the compact form of the replication's store keys turns
// back into the same key; keys of another shape are not taken.
func TestCompactKey(t *testing.T) {
	for _, key := range []string{"c.0102030405060708", "a.00000000000000000000ffff7f0000011f90", "c.00"} {
		k, ok := compact(key)
		if !ok || k.String() != key {
			t.Fatalf("%q: compact %v, back %q", key, ok, k.String())
		}
	}
	cid := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	if k, ok := makeKey('c', cid); !ok || k.String() != "c.0102030405060708" {
		t.Fatalf("makeKey of a CID: %v %q", ok, k.String())
	}
	if _, ok := makeKey('a', make([]byte, 19)); ok {
		t.Fatal("makeKey took 19 bytes")
	}
	for _, key := range []string{"", "c.", "x.00", "c.0", "c.zz", "c0102", "a." + strings.Repeat("00", 19)} {
		if _, ok := compact(key); ok {
			t.Fatalf("%q taken", key)
		}
	}
}
