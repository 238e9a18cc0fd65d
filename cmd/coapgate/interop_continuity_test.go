package main

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestInteropLibcoapSymmetricOn5683 drives the plain listener with libcoap's
// coap-client in symmetric mode: an /auth carrying seq gets the symmetric
// answer, and an uplink with the token, option 2089 (binary, given as hex)
// and an encrypted payload (from a file) gets 2.04 with an encrypted reply
// (written to a file and decrypted here); then the NTP topic with a plain
// token answers the three times.
func TestInteropLibcoapSymmetricOn5683(t *testing.T) {
	bin := coapClient(t)
	g := startTestGateway(t)
	d := g.newDevice("", "libcoap_sym")
	base := "coap://" + g.s.CoAPAddr().String()
	dir := t.TempDir()

	clientID := d.pk + "." + d.dk
	sign := func(seq string) string {
		mac := hmac.New(md5.New, []byte(d.secret))
		fmt.Fprintf(mac, "clientId%sdeviceName%sproductKey%s", clientID, d.dk, d.pk)
		if seq != "" {
			fmt.Fprintf(mac, "seq%s", seq)
		}
		return hex.EncodeToString(mac.Sum(nil))
	}
	body := fmt.Sprintf(`{"productKey":%q,"deviceName":%q,"clientId":%q,"seq":"1","sign":%q}`, d.pk, d.dk, clientID, sign("1"))
	out := runCoapClient(t, bin, "-m", "post", "-t", "50", "-A", "50", "-e", body, "-B", "5", "-v", "0", base+"/auth")
	var sa struct {
		Random    string
		SeqOffset uint64
		Token     string
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &sa); err != nil || len(sa.Random) != 16 || sa.SeqOffset == 0 || sa.Token == "" {
		t.Fatalf("symmetric auth answer %q: %v", out, err)
	}
	key := symKey(d.secret, sa.Random)
	plain := `{"id":"3","params":{"temp":7}}`
	in, reply := filepath.Join(dir, "uplink"), filepath.Join(dir, "reply")
	if err := os.WriteFile(in, cbcSeal(t, key, dialectAIV, []byte(plain)), 0o600); err != nil {
		t.Fatal(err)
	}
	seq := "0x" + hex.EncodeToString(cbcSeal(t, key, dialectAIV, []byte(strconv.FormatUint(sa.SeqOffset, 10))))
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	out = runCoapClient(t, bin, "-m", "post", "-t", "50", "-O", "2088,"+sa.Token, "-O", "2089,"+seq,
		"-f", in, "-o", reply, "-B", "5", "-v", "7", base+"/topic"+topic)
	if !strings.Contains(out, "c:2.04") {
		t.Fatalf("encrypted uplink on 5683 not answered 2.04:\n%s", out)
	}
	ct, err := os.ReadFile(reply)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(cbcOpen(t, key, ct)); got != `{"id":"3","code":200,"data":{},"message":"success"}` {
		t.Fatalf("decrypted reply %q", got)
	}
	if msgs := g.messages(d); len(msgs) != 1 || string(msgs[0].PayloadBase64) != plain {
		t.Fatalf("stored %+v, want the plaintext", msgs)
	}

	// NTP with a plain token.
	body = fmt.Sprintf(`{"productKey":%q,"deviceName":%q,"clientId":%q,"sign":%q}`, d.pk, d.dk, clientID, sign(""))
	out = runCoapClient(t, bin, "-m", "post", "-t", "50", "-A", "50", "-e", body, "-B", "5", "-v", "0", base+"/auth")
	var pa struct{ Token string }
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &pa); err != nil || pa.Token == "" {
		t.Fatalf("plain auth answer %q: %v", out, err)
	}
	out = runCoapClient(t, bin, "-m", "post", "-t", "50", "-O", "61,"+pa.Token, "-e", `{"deviceSendTime":"1234"}`, "-B", "5", "-v", "0",
		base+fmt.Sprintf("/topic/ext/ntp/%s/%s/request", d.pk, d.dk))
	var ntp map[string]string
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &ntp); err != nil || ntp["deviceSendTime"] != "1234" || ntp["serverRecvTime"] == "" || ntp["serverSendTime"] == "" {
		t.Fatalf("NTP answer %q: %v", out, err)
	}
}
