package native

import (
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
