package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coapgate/coapgate/internal/dtlsx/engine"
)

func TestDTLSSuites(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	yml := "dtls:\n  engine: native\n  suites: [TLS_RSA_WITH_AES_128_CBC_SHA256, tls_psk_with_aes_128_ccm_8]\n"
	if err := os.WriteFile(file, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := c.DTLS.SuiteIDs()
	if want := []uint16{engine.TLS_RSA_WITH_AES_128_CBC_SHA256, engine.TLS_PSK_WITH_AES_128_CCM_8}; err != nil || !slices.Equal(ids, want) {
		t.Fatalf("YAML list: %v %v", ids, err)
	}
	// The same as one comma-separated string (environment, flag).
	c, err = Load("", func(k string) (string, bool) {
		switch k {
		case "COAPGATE_DTLS_ENGINE":
			return "native", true
		case "COAPGATE_DTLS_SUITES":
			return "TLS_PSK_WITH_AES_128_CBC_SHA, TLS_PSK_WITH_AES_256_CBC_SHA", true
		}
		return "", false
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ids, _ := c.DTLS.SuiteIDs(); !slices.Equal(ids, []uint16{engine.TLS_PSK_WITH_AES_128_CBC_SHA, engine.TLS_PSK_WITH_AES_256_CBC_SHA}) {
		t.Fatalf("env list: %v", ids)
	}
	if ids, err := Default().DTLS.SuiteIDs(); ids != nil || err != nil {
		t.Fatalf("default: %v %v", ids, err)
	}

	for _, tc := range []struct {
		engine, suites string
		want           []string
	}{
		{"native", "TLS_PSK_WITH_AES_128_CCM_8,TLS_PSK_WITH_CHACHA20,bogus", []string{`unknown cipher suite "TLS_PSK_WITH_CHACHA20", "bogus"`, "valid names: TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,", "TLS_RSA_WITH_AES_256_CBC_SHA,", "TLS_PSK_WITH_AES_256_CBC_SHA"}},
		{"native", "TLS_PSK_WITH_AES_128_CCM_8, tls_psk_with_aes_128_ccm_8", []string{"TLS_PSK_WITH_AES_128_CCM_8 listed twice"}},
		{"pion", "TLS_PSK_WITH_AES_128_CCM_8", []string{"dtls.suites applies to dtls.engine native only"}},
	} {
		c := Default()
		c.DTLS.Engine, c.DTLS.Suites = tc.engine, List(tc.suites)
		err := c.Validate()
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s %q: error %v, want %q", tc.engine, tc.suites, err, w)
			}
		}
	}
}
