package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	yml := "data_dir: /from/file\ncoap:\n  listen: \":1111\"\n  workers: 7\napi:\n  listen: \":2222\"\nauth:\n  token_ttl: 2h\n"
	if err := os.WriteFile(file, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"COAPGATE_COAP_LISTEN":    ":3333", // env beats file
		"COAPGATE_API_LISTEN":     ":4444", // flag beats env
		"COAPGATE_AUTH_TOKEN_TTL": "3h",
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	ov := RegisterFlags(fs)
	if err := fs.Parse([]string{"--api.listen", ":5555", "--coap.max-body", "1024"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, ov)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"file only", c.DataDir, "/from/file"},
		{"file over default", c.CoAP.Workers, 7},
		{"env over file", c.CoAP.Listen, ":3333"},
		{"flag over env", c.API.Listen, ":5555"},
		{"env duration", c.Auth.TokenTTL, 3 * time.Hour},
		{"flag over default", c.CoAP.MaxBody, 1024},
		{"default kept", c.CoAP.ExchangeLifetime, 247 * time.Second},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("coap:\n  lissten: \":1\"\n"), 0o600)
	if _, err := Load(typo, nil, nil); err == nil || !strings.Contains(err.Error(), "lissten") {
		t.Errorf("unknown key: err = %v, want mention of lissten", err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	if _, err := Load(empty, nil, nil); err != nil {
		t.Errorf("empty file: %v", err)
	}
	if _, err := Load("", func(k string) (string, bool) {
		if k == "COAPGATE_COAP_WORKERS" {
			return "many", true
		}
		return "", false
	}, nil); err == nil {
		t.Error("bad env int accepted")
	}
	// Validate reports every problem at once.
	c := Default()
	c.CoAP.Workers = 0
	c.Log.Format = "xml"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "workers") || !strings.Contains(err.Error(), "xml") {
		t.Errorf("Validate = %v, want both problems", err)
	}
}

func TestPrintConfigRedactsSecret(t *testing.T) {
	c := Default()
	c.Auth.TokenKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	b, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "0011223344") {
		t.Fatalf("secret leaked:\n%s", b)
	}
	if !strings.Contains(string(b), "exchange_lifetime: 4m7s") {
		t.Errorf("durations not human-readable:\n%s", b)
	}
}

func TestEveryFieldHasHelp(t *testing.T) {
	c := Default()
	for _, f := range Fields(&c) {
		if Help[f.Key] == "" {
			t.Errorf("config key %s has no help text", f.Key)
		}
	}
}

func TestReadmeListsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Skipf("README: %v", err)
	}
	c := Default()
	for _, f := range Fields(&c) {
		if !strings.Contains(string(b), "`"+f.Key+"`") {
			t.Errorf("README's configuration table lacks `%s`", f.Key)
		}
	}
}

func TestSessionModeSettings(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		bad    string // substring of the error, "" when valid
	}{
		{"symmetric listener disabled", func(c *Config) { c.CoAP.SymmetricListen = "" }, ""},
		{"symmetric listener without port", func(c *Config) { c.CoAP.SymmetricListen = "localhost" }, "coap.symmetric_listen"},
		{"window 0", func(c *Config) { c.CoAP.ReplayWindow = 0 }, "coap.replay_window"},
		{"window too large", func(c *Config) { c.CoAP.ReplayWindow = 1 << 20 }, "coap.replay_window"},
		{"sessions too few", func(c *Config) { c.CoAP.ReplaySessions = 1 }, "coap.replay_sessions"},
		{"IV as hex", func(c *Config) { c.Auth.DialectEIV = "00112233445566778899aabbccddeeff" }, ""},
		{"IV too short", func(c *Config) { c.Auth.DialectEIV = "short" }, "auth.dialect_e_iv"},
		{"IV 32 chars not hex", func(c *Config) { c.Auth.DialectEIV = strings.Repeat("z", 32) }, "auth.dialect_e_iv"},
		{"symmetric mode off on 5683", func(c *Config) { c.CoAP.SymmetricOnPlain = false }, ""},
		{"token cap equal to the ttl", func(c *Config) { c.Auth.TokenMaxAge = c.Auth.TokenTTL }, ""},
		{"token cap below the ttl", func(c *Config) { c.Auth.TokenMaxAge = c.Auth.TokenTTL / 2 }, "auth.token_max_age"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if tt.bad == "" && err != nil || tt.bad != "" && (err == nil || !strings.Contains(err.Error(), tt.bad)) {
				t.Fatalf("Validate = %v, want %q", err, tt.bad)
			}
		})
	}
	c := Default()
	if iv, err := c.Auth.SignEIV(); err != nil || string(iv) != "543yhjy97ae7fyfg" {
		t.Fatalf("default IV %q, %v", iv, err)
	}
	c.Auth.DialectEIV = "00112233445566778899aabbccddeeff"
	if iv, _ := c.Auth.SignEIV(); len(iv) != 16 || iv[1] != 0x11 {
		t.Fatalf("hex IV %x", iv)
	}
}

func TestBlockBudgetSettings(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		bad    bool
	}{
		{"defaults", func(*Config) {}, false},
		{"peer budget below max_body", func(c *Config) { c.CoAP.BlockPeerBudget = c.CoAP.MaxBody - 1 }, true},
		{"global budget below peer budget", func(c *Config) { c.CoAP.BlockBudget = c.CoAP.BlockPeerBudget - 1 }, true},
		{"no transfers", func(c *Config) { c.CoAP.BlockTransfers = 0 }, true},
		{"one body per peer", func(c *Config) { c.CoAP.BlockPeerBudget = c.CoAP.MaxBody }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if tt.bad != (err != nil) || tt.bad && !strings.Contains(err.Error(), "coap.block_") {
				t.Fatalf("Validate = %v, want bad=%v", err, tt.bad)
			}
		})
	}
}

func TestFlagSpellings(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	ov := RegisterFlags(fs)
	args := NormalizeFlagArgs([]string{"--coap.max_body=2048", "-data_dir", "/d_x", "--dtls.max-sessions", "7", "--", "--api.pprof_listen"})
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	c, err := Load("", nil, ov)
	if err != nil {
		t.Fatal(err)
	}
	if c.CoAP.MaxBody != 2048 || c.DataDir != "/d_x" || c.DTLS.MaxSessions != 7 {
		t.Fatalf("max_body %d data_dir %q max_sessions %d", c.CoAP.MaxBody, c.DataDir, c.DTLS.MaxSessions)
	}
	if got := fs.Args(); len(got) != 1 || got[0] != "--api.pprof_listen" {
		t.Fatalf("arguments after -- changed: %q", got)
	}
}

func TestUnknownEnv(t *testing.T) {
	got := UnknownEnv([]string{
		"COAPGATE_COAP_LISTEN=:1", "COAPGATE_COAP_LISTN=:2", "COAPGATE_API_KEY=x", "COAPGATE_CONFIG=f",
		"COAPGATE_TEST_NATS_URL=n", "HOME=/root", "COAPGATE_DATADIR=d",
	})
	if strings.Join(got, ",") != "COAPGATE_COAP_LISTN,COAPGATE_DATADIR" {
		t.Fatalf("UnknownEnv = %q", got)
	}
}

func TestDeviceCacheEntries(t *testing.T) {
	c, err := Load("", func(k string) (string, bool) {
		if k == "COAPGATE_AUTH_DEVICE_CACHE_ENTRIES" {
			return "2000000", true
		}
		return "", false
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.DeviceCacheEntries != 2000000 {
		t.Errorf("from env: %d, want 2000000", c.Auth.DeviceCacheEntries)
	}
	if d := Default().Auth.DeviceCacheEntries; d != 1<<18 {
		t.Errorf("default %d, want %d", d, 1<<18)
	}
	c = Default()
	c.Auth.DeviceCacheEntries = 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "auth.device_cache_entries") {
		t.Errorf("Validate with 0 entries = %v", err)
	}
}
