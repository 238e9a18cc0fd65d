package devsign

import (
	"errors"
	"testing"
)

// docs/protocol.md §3.5 test vectors (public demo credentials).
const (
	vecPK     = "a1MZxOdcBnO"
	vecDN     = "test_01"
	vecDS     = "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56"
	vecClient = "a1MZxOdcBnO.test_01"
)

func TestVectors(t *testing.T) {
	tests := []struct {
		name   string
		fields map[string]string
		want   string
	}{
		{"with seq", map[string]string{"productKey": vecPK, "deviceName": vecDN, "clientId": vecClient, "seq": "2989"}, "199c4a316febb5f5780dffa897355bc6"},
		{"without seq", map[string]string{"productKey": vecPK, "deviceName": vecDN, "clientId": vecClient}, "2db0e24ea7eb7f2570fa153fa5559f74"},
		{"excluded fields ignored", map[string]string{"productKey": vecPK, "deviceName": vecDN, "clientId": vecClient, "sign": "x", "signmethod": "hmacmd5", "version": "1", "resources": "r"}, "2db0e24ea7eb7f2570fa153fa5559f74"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Sign(HMACMD5, vecDS, tt.fields)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("Sign = %s, want %s", got, tt.want)
			}
			ok, err := Verify(HMACMD5, vecDS, tt.fields, toUpper(tt.want))
			if err != nil || !ok {
				t.Fatalf("Verify(upper-case) = %v, %v; want true", ok, err)
			}
		})
	}
}

func toUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 32
		}
	}
	return string(b)
}

func TestContentOrder(t *testing.T) {
	got := Content(map[string]string{"productKey": "p", "deviceName": "d", "clientId": "c", "seq": "1", "timestamp": "9"})
	want := "clientIdcdeviceNamedproductKeypseq1timestamp9"
	if got != want {
		t.Fatalf("Content = %q, want %q", got, want)
	}
}

func TestMethods(t *testing.T) {
	fields := map[string]string{"productKey": vecPK, "deviceName": vecDN, "clientId": vecClient}
	seen := map[string]bool{}
	for _, m := range []Method{HMACMD5, HMACSHA1, HMACSHA256} {
		s, err := Sign(m, vecDS, fields)
		if err != nil {
			t.Fatal(err)
		}
		if seen[s] {
			t.Fatalf("%s produced a signature another method produced", m)
		}
		seen[s] = true
		if ok, _ := Verify(m, vecDS, fields, s); !ok {
			t.Fatalf("%s: own signature does not verify", m)
		}
		if ok, _ := Verify(m, "wrong", fields, s); ok {
			t.Fatalf("%s: verifies with the wrong secret", m)
		}
	}
	wantLen := map[Method]int{HMACMD5: 32, HMACSHA1: 40, HMACSHA256: 64}
	for m, n := range wantLen {
		s, _ := Sign(m, vecDS, fields)
		if len(s) != n {
			t.Errorf("%s: len %d, want %d", m, len(s), n)
		}
	}
}

func TestParseMethod(t *testing.T) {
	for in, want := range map[string]Method{"": HMACMD5, "hmacmd5": HMACMD5, "HmacSHA1": HMACSHA1, "hmacsha256": HMACSHA256} {
		got, err := ParseMethod(in)
		if err != nil || got != want {
			t.Errorf("ParseMethod(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseMethod("sha512"); !errors.Is(err, ErrUnknownMethod) {
		t.Errorf("ParseMethod(sha512) err = %v, want ErrUnknownMethod", err)
	}
}
