package esign_test

import (
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/coapgate/coapgate/internal/auth/devsign"
	"github.com/coapgate/coapgate/internal/auth/esign"
	"github.com/coapgate/coapgate/internal/auth/symmetric"
	"github.com/coapgate/coapgate/internal/dtlspsk"
)

// TestProtocolVectors checks every test vector of docs/protocol.md §3.5
// against the implementation, and that the document still shows each one.
func TestProtocolVectors(t *testing.T) {
	const (
		pk, dn, ds = "a1MZxOdcBnO", "test_01", "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56"
		cid        = "a1MZxOdcBnO.test_01"
	)
	doc, err := os.ReadFile("../../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	must := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sessKey := symmetric.SessionKey(ds, "1a48574a01ce8766")
	psk := esign.Key(ds)
	opt2101 := must(func() (string, error) {
		b, err := esign.Seal(psk, []byte(symmetric.IV), "abc", 1)
		return string(b), err
	}())
	for _, v := range []struct{ name, got, want string }{
		{"auth sign", must(devsign.Sign(devsign.HMACMD5, ds, map[string]string{"clientId": cid, "deviceName": dn, "productKey": pk})), "2db0e24ea7eb7f2570fa153fa5559f74"},
		{"auth sign with seq", must(devsign.Sign(devsign.HMACMD5, ds, map[string]string{"clientId": cid, "deviceName": dn, "productKey": pk, "seq": "2989"})), "199c4a316febb5f5780dffa897355bc6"},
		{"session key", hex.EncodeToString(sessKey[:]), "2a56c60f98ebceff9e38f02e9d2bc587"},
		{"option 2089", hex.EncodeToString(symmetric.EncryptSeq(sessKey, 1)), "3ed352c2f0fffc0a048fa27d0d8353b9"},
		{"DTLS PSK", hex.EncodeToString(dtlspsk.Key(ds)), "a2d75939b3188a661e29ebced87d2832"},
		{"sign-mode auth sign", esign.Sign(pk, dn, "3600", "2", ds), "0E9C8E51611267F609E360969626D67A91F1565D82D4967E58C5CAC22D5085D7"},
		{"option 2101", opt2101, "0DBE213278CC5587204DA3C5A492B75A46ECDFF61926731A4F41A679914816A8"},
	} {
		if v.got != v.want {
			t.Errorf("%s = %s, want %s", v.name, v.got, v.want)
		}
		if !strings.Contains(string(doc), "`"+v.want+"`") {
			t.Errorf("%s: docs/protocol.md does not show %s", v.name, v.want)
		}
	}
}
