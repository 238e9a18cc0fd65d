package main

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// coapClient finds libcoap's coap-client (Debian libcoap3-bin), the outside
// implementation the interop tests speak to. .ci/run installs it.
func coapClient(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"coap-client-notls", "coap-client", "coap-client-openssl", "coap-client-gnutls"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("libcoap's coap-client not installed (apt-get install libcoap3-bin); .ci/run installs it")
	return ""
}

func runCoapClient(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestInteropLibcoap drives the gateway with libcoap's coap-client: auth with
// a JSON body signed outside our code, then publishes with the token in
// option 61 and in option 2088.
func TestInteropLibcoap(t *testing.T) {
	bin := coapClient(t)
	g := startTestGateway(t)
	d := g.newDevice("", "libcoap_1")
	base := "coap://" + g.s.CoAPAddr().String()

	// The signature is computed here with the standard library, independent
	// of internal/auth/devsign (docs/protocol.md §3.1).
	clientID := d.pk + "." + d.dk
	mac := hmac.New(md5.New, []byte(d.secret))
	fmt.Fprintf(mac, "clientId%sdeviceName%sproductKey%s", clientID, d.dk, d.pk)
	body := fmt.Sprintf(`{"productKey":%q,"deviceName":%q,"clientId":%q,"signmethod":"hmacmd5","sign":%q}`,
		d.pk, d.dk, clientID, hex.EncodeToString(mac.Sum(nil)))
	out := runCoapClient(t, bin, "-m", "post", "-t", "50", "-A", "50", "-e", body, "-B", "5", "-v", "0", base+"/auth")
	var auth struct{ Token string }
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &auth); err != nil || auth.Token == "" {
		t.Fatalf("auth answer %q: %v", out, err)
	}

	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	for i, opt := range []string{"61", "2088"} {
		id := fmt.Sprintf("%d", 100+i)
		payload := fmt.Sprintf(`{"id":%q,"version":"1.0","method":"thing.event.property.post","params":{"temp":%d}}`, id, 20+i)
		out := runCoapClient(t, bin, "-m", "post", "-t", "50", "-O", opt+","+auth.Token, "-e", payload, "-B", "5", "-v", "0", base+"/topic"+topic)
		want := fmt.Sprintf(`{"id":%q,"code":200,"data":{},"message":"success"}`, id)
		if strings.TrimSpace(out) != want {
			t.Fatalf("token in option %s: reply %q, want %q", opt, out, want)
		}
	}
	// Verbose output shows the response code and option 2090.
	out = runCoapClient(t, bin, "-m", "post", "-t", "50", "-O", "2088,"+auth.Token, "-e", `{"id":"9"}`, "-B", "5", "-v", "7", base+"/topic"+topic)
	if !strings.Contains(out, "c:2.04") || !strings.Contains(out, "2090:") {
		t.Fatalf("verbose answer lacks 2.04 / option 2090:\n%s", out)
	}
	// Another device's topic is refused.
	other := fmt.Sprintf("/sys/%s/someone_else/thing/event/property/post", d.pk)
	out = runCoapClient(t, bin, "-m", "post", "-t", "50", "-O", "61,"+auth.Token, "-e", `{"id":"1"}`, "-B", "5", "-v", "7", base+"/topic"+other)
	if !strings.Contains(out, "c:4.03") {
		t.Fatalf("other device's topic not refused with 4.03:\n%s", out)
	}
	msgs := g.messages(d)
	if len(msgs) != 3 {
		t.Fatalf("stored %d messages, want 3", len(msgs))
	}
	if !strings.Contains(string(msgs[0].PayloadBase64), `"temp":20`) || !strings.Contains(string(msgs[1].PayloadBase64), `"temp":21`) {
		t.Fatalf("stored payloads do not match: %q %q", msgs[0].PayloadBase64, msgs[1].PayloadBase64)
	}
}
