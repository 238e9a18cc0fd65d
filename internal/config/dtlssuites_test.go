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
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "dtls.engine is obsolete") {
		t.Fatalf("COAPGATE_DTLS_ENGINE=native: warnings %q", c.Warnings)
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
	} {
		c := Default()
		c.DTLS.Suites = List(tc.suites)
		err := c.Validate()
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s %q: error %v, want %q", tc.engine, tc.suites, err, w)
			}
		}
	}
}

// TestRemovedDTLSSettings: the settings of the removed pion-based listener
// are accepted with a warning each (an upgraded node starts on its old
// file and environment), the rest of the file still applies, and
// dtls.engine other than native is refused with a message that says why.
func TestRemovedDTLSSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	yml := "dtls:\n  max_sessions: 7\n  engine: native\n  hibernate_after: 10s\n  cookie_timeout: 5s\n  handshake_idle_timeout: 10s\n  handshake_rate: 3\n"
	if err := os.WriteFile(file, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file, func(k string) (string, bool) {
		if k == "COAPGATE_DTLS_HIBERNATE_AFTER" {
			return "0", true
		}
		return "", false
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.DTLS.MaxSessions != 7 || c.DTLS.HandshakeRate != 3 {
		t.Fatalf("the file's other settings were lost: %+v", c.DTLS)
	}
	if len(c.Warnings) != 5 {
		t.Fatalf("warnings %q, want 5", c.Warnings)
	}
	for _, k := range []string{"dtls.engine", "dtls.hibernate_after", "dtls.cookie_timeout", "dtls.handshake_idle_timeout", "env COAPGATE_DTLS_HIBERNATE_AFTER"} {
		if !strings.Contains(strings.Join(c.Warnings, "\n"), k) {
			t.Errorf("no warning names %s: %q", k, c.Warnings)
		}
	}
	if u := UnknownEnv([]string{"COAPGATE_DTLS_COOKIE_TIMEOUT=5s", "COAPGATE_DTLS_ENGIN=native"}); len(u) != 1 || u[0] != "COAPGATE_DTLS_ENGIN" {
		t.Fatalf("UnknownEnv %q: a removed setting is warned about by Load, a typo still reported", u)
	}

	if err := os.WriteFile(file, []byte("dtls:\n  engine: pion\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file, nil, nil); err == nil || !strings.Contains(err.Error(), "pion-based DTLS engine was removed") {
		t.Fatalf("dtls.engine pion in the file: %v", err)
	}
	_, err = Load("", func(k string) (string, bool) { return "pion", k == "COAPGATE_DTLS_ENGINE" }, nil)
	if err == nil || !strings.Contains(err.Error(), "COAPGATE_DTLS_ENGINE") {
		t.Fatalf("COAPGATE_DTLS_ENGINE=pion: %v", err)
	}
}
