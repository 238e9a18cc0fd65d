package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coapgate/coapgate/sdk"
)

func runListen(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "listen", "[flags]", `
Stay online as a device and answer downlink commands. The device publishes a
heartbeat uplink at start and every --interval (default an empty property
post: it keeps the device online and lets the gateway announce waiting
commands), takes commands both ways the gateway sends them, and replies to
each with --reply-code and --reply-data:

  - pushed: the gateway sends a CON POST /topic/... to the device's address
    or DTLS session (commands.push, on by default), acknowledged with 2.04;
  - announced: a response carries option 2100 with the command's path, and
    the device fetches it with GET. In --mode symmetric (no push) and with
    push off, a command waits for the next heartbeat: lower --interval to
    get it sooner.

The reply goes to {command topic}_reply as {"id","code","data","message"};
a raw-down command (thing/model/down_raw) gets --reply-data as raw bytes.
One line per event on stdout:

  listening product=PK device=DK server=HOST:PORT interval=60s
  uplink seq=N code=2.04 message-id=<option 2090>
  command id=1 topic=/sys/PK/DK/thing/service/property/set method=thing.service.property.set params={"switch":1}
  reply id=1 code=200 data={}

It runs until interrupted (Ctrl-C, SIGTERM); a failed heartbeat is reported
on stderr and retried at the next interval. Works in every mode: --mode
symmetric and --dtls as for publish.`, `
  export COAPDEV_PRODUCT=a1MZxOdcBnO COAPDEV_DEVICE=test_01 COAPDEV_SECRET=...
  coapdev listen --server 127.0.0.1:5683 --reply-code 200 --reply-data '{"switch":1}'
  # in another shell:
  coapgate command send --type setProperties --params '{"switch":1}' a1MZxOdcBnO test_01`)
	d := addDeviceFlags(fs)
	topic := fs.String("topic", "", "heartbeat topic (default \"/sys/<product>/<device>/thing/event/property/post\")")
	data := fs.String("data", `{"id":"0","version":"1.0","method":"thing.event.property.post","params":{}}`, "heartbeat payload")
	interval := fs.Duration("interval", time.Minute, "publish the heartbeat this often (0: only once, at start); keep it\nbelow the device's online lifetime to receive pushed commands")
	replyCode := fs.Int("reply-code", 200, "code of every reply (200 success; anything else marks the command failed)")
	replyData := fs.String("reply-data", "{}", "data of every reply: JSON (raw bytes for a raw-down command)")
	if code, ok := parseFlags(e, fs, args); !ok {
		return code
	}
	d.applyEnv(e.getenv)
	if msg := d.resolve(fs); msg != "" {
		return usageError(e, fs, "%s", msg)
	}
	if m := d.missing(); len(m) > 0 {
		return usageError(e, fs, "missing %s", strings.Join(m, ", "))
	}
	if *topic == "" {
		*topic = "/sys/" + d.product + "/" + d.device + "/thing/event/property/post"
	}
	if *interval < 0 {
		return usageError(e, fs, "--interval must not be negative")
	}
	if *replyCode < 0 || *replyCode > 999999 {
		return usageError(e, fs, "--reply-code %d out of range", *replyCode)
	}
	var replyValue any
	dec := json.NewDecoder(strings.NewReader(*replyData))
	dec.UseNumber()
	if err := dec.Decode(&replyValue); err != nil || dec.More() {
		return usageError(e, fs, "--reply-data is not one JSON value")
	}
	replyValue = numbers(replyValue)
	heartbeat := []byte(*data)
	if d.cbor {
		heartbeat = jsonToCBOR(heartbeat)
	}

	out := &lineWriter{w: e.stdout}
	handler := func(_ context.Context, cmd sdk.Command) (int, any) {
		if cmd.Raw != nil {
			out.printf("command id=%s topic=%s raw=%s\n", orDash(cmd.ID), cmd.Topic, bytesString(cmd.Raw))
			out.printf("reply id=%s code=%d data=%s\n", orDash(cmd.ID), *replyCode, bytesString([]byte(*replyData)))
			return *replyCode, []byte(*replyData)
		}
		params := string(cmd.Params)
		if params == "" {
			params = "{}"
		}
		out.printf("command id=%s topic=%s method=%s params=%s\n", orDash(cmd.ID), cmd.Topic, orDash(cmd.Method), params)
		out.printf("reply id=%s code=%d data=%s\n", orDash(cmd.ID), *replyCode, compactJSON(*replyData))
		return *replyCode, replyValue
	}
	c, err := d.dial(ctx, true, sdk.WithCommandHandler(handler))
	if d.activated != nil {
		out.printf("activated product=%s device=%s asset-id=%s device-secret=%s\n",
			d.activated.ProductKey, d.activated.DeviceName, d.activated.AssetID, d.activated.DeviceSecret)
	}
	if err != nil {
		return dialError(e, "listen", err)
	}
	defer c.Close()
	out.printf("listening product=%s device=%s server=%s interval=%s\n", d.product, d.device, d.server, *interval)

	var tick <-chan time.Time
	if *interval > 0 {
		t := time.NewTicker(*interval)
		defer t.Stop()
		tick = t.C
	}
	for seq := 1; ; seq++ {
		rctx, cancel := context.WithTimeout(ctx, d.timeout)
		resp, err := c.Publish(rctx, *topic, heartbeat)
		cancel()
		switch {
		case ctx.Err() != nil:
			return exitOK
		case err != nil:
			fmt.Fprintf(e.stderr, "coapdev listen: heartbeat seq=%d: %v\n", seq, err)
		default:
			out.printf("uplink seq=%d code=%s message-id=%s\n", seq, codeString(resp.Code), resp.MessageID)
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-tick:
		}
	}
}

// lineWriter serialises lines written from the command goroutine and the
// heartbeat loop.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, a...)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// compactJSON prints a JSON value on one line.
func compactJSON(s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		return s
	}
	return b.String()
}

// bytesString prints printable UTF-8 as is, anything else as 0x<hex>.
func bytesString(p []byte) string {
	if utf8.Valid(p) && !bytes.ContainsAny(p, "\n\r\x00 ") {
		return string(p)
	}
	return "0x" + hex.EncodeToString(p)
}
