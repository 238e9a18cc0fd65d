package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/coapgate/coapgate/sdk"
)

func runPublish(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "publish", "[flags]", `
Publish a payload to a topic with POST /topic/{segments...}, authenticating
first (POST /auth) unless --token is given. For each message print one line:

  seq=N code=2.04 message-id=<option 2090> payload=<reply>

A NON publish without --wait-non prints "seq=N sent=NON". A 4.01 answer
triggers one re-authentication and one retry. Failed messages are reported on
stderr; the exit status is 1 if any message failed.

With --dtls (port 5684 by default) the device makes a DTLS-PSK handshake
with the identity "<product>,<device>,<secure-mode>,<lifetime>" and publishes
without a token. --secure-mode 3 takes the product secret in --secret: the
device activates first, prints "activated ... device-secret=<secret>" and
publishes on a new secureMode 2 session.

With --mode symmetric (port 5682 by default) the payload is AES-encrypted,
each message carries the next sequence number in option 2089 and the reply
is decrypted before it is printed; --token cannot be used then.

The topic defaults to /sys/{product}/{device}/thing/event/property/post.
With --cbor, a JSON payload is converted to CBOR before it is sent; a payload
that is not JSON is sent as it is.`, `
  export COAPDEV_PRODUCT=a1MZxOdcBnO COAPDEV_DEVICE=test_01 COAPDEV_SECRET=...
  coapdev publish --server 127.0.0.1:5683 \
    --topic /sys/a1MZxOdcBnO/test_01/thing/event/property/post \
    --data '{"id":"1","version":"1.0","method":"thing.event.property.post","params":{"temp":21.5}}' \
    --count 10 --interval 500ms`)
	d := addDeviceFlags(fs)
	topic := fs.String("topic", "", "MQTT-style topic (default \"/sys/<product>/<device>/thing/event/property/post\")")
	data := fs.String("data", "", "payload to send")
	dataFile := fs.String("data-file", "", "read the payload from `file` (\"-\" for stdin)")
	non := fs.Bool("non", false, "send non-confirmable (NON) messages")
	waitNON := fs.Duration("wait-non", 0, "with --non, wait this long for the server's NON response")
	count := fs.Int("count", 1, "number of messages to send")
	interval := fs.Duration("interval", time.Second, "pause between messages")
	token := fs.String("token", "", "use this auth token instead of authenticating first")
	if code, ok := parseFlags(e, fs, args); !ok {
		return code
	}
	d.applyEnv(e.getenv)
	if msg := d.resolve(fs); msg != "" {
		return usageError(e, fs, "%s", msg)
	}
	if d.mode == modeSymmetric && *token != "" {
		return usageError(e, fs, "--token cannot be used with --mode symmetric (the session key comes from auth)")
	}

	withCreds := len(d.missing()) == 0
	if !withCreds && *token == "" {
		return usageError(e, fs, "missing %s (or --token)", strings.Join(d.missing(), ", "))
	}
	if *topic == "" {
		if d.product == "" || d.device == "" {
			return usageError(e, fs, "--topic is required without --product and --device")
		}
		*topic = "/sys/" + d.product + "/" + d.device + "/thing/event/property/post"
	}
	if *count < 1 {
		return usageError(e, fs, "--count must be at least 1")
	}
	if *interval < 0 || *waitNON < 0 {
		return usageError(e, fs, "--interval and --wait-non must not be negative")
	}
	if *waitNON > 0 && !*non {
		return usageError(e, fs, "--wait-non needs --non")
	}
	payload, err := readPayload(e, *data, *dataFile, isFlagSet(fs, "data"))
	if err != nil {
		return usageError(e, fs, "%v", err)
	}
	if d.cbor {
		payload = jsonToCBOR(payload)
	}

	var extra []sdk.Option
	if *token != "" {
		extra = append(extra, sdk.WithToken(*token))
	}
	c, err := d.dial(ctx, withCreds, extra...)
	if d.activated != nil {
		// The point of secureMode 3: keep this secret for mode 2 next time.
		fmt.Fprintf(e.stdout, "activated product=%s device=%s asset-id=%s device-secret=%s\n",
			d.activated.ProductKey, d.activated.DeviceName, d.activated.AssetID, d.activated.DeviceSecret)
	}
	if err != nil {
		return dialError(e, "publish", err)
	}
	defer c.Close()

	var popts []sdk.PublishOption
	if *non {
		popts = append(popts, sdk.NonConfirmable())
	}
	if *waitNON > 0 {
		popts = append(popts, sdk.WaitNONResponse(*waitNON))
	}
	failed := 0
	for seq := 1; seq <= *count; seq++ {
		if seq > 1 && *interval > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(*interval):
			}
		}
		if ctx.Err() != nil {
			fmt.Fprintf(e.stderr, "coapdev publish: %v\n", ctx.Err())
			return exitError
		}
		rctx, cancel := context.WithTimeout(ctx, d.timeout)
		resp, err := c.Publish(rctx, *topic, payload, popts...)
		cancel()
		switch {
		case err != nil:
			failed++
			fmt.Fprintf(e.stderr, "seq=%d error: %v\n", seq, err)
		case resp == nil:
			fmt.Fprintf(e.stdout, "seq=%d sent=NON\n", seq)
		default:
			fmt.Fprintf(e.stdout, "seq=%d code=%s message-id=%s payload=%s\n", seq, codeString(resp.Code), resp.MessageID, payloadString(resp))
		}
	}
	if failed > 0 {
		if *count > 1 {
			fmt.Fprintf(e.stderr, "coapdev publish: %d of %d messages failed\n", failed, *count)
		}
		return exitError
	}
	return exitOK
}

// isFlagSet reports whether name was given on the command line (--data ”
// is a valid, empty payload).
func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// readPayload returns the payload of --data or --data-file (exactly one).
func readPayload(e *env, data, file string, dataSet bool) ([]byte, error) {
	switch {
	case dataSet && file != "":
		return nil, errors.New("give either --data or --data-file, not both")
	case dataSet:
		return []byte(data), nil
	case file == "-":
		b, err := io.ReadAll(e.stdin)
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		return b, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	return nil, errors.New("missing --data or --data-file")
}

// jsonToCBOR converts a JSON document to CBOR, keeping integers integers;
// anything that is not JSON is returned unchanged.
func jsonToCBOR(b []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return b
	}
	out, err := cbor.Marshal(numbers(v))
	if err != nil {
		return b
	}
	return out
}

// numbers replaces json.Number by int64 or float64, recursively.
func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	}
	return v
}

// codeString formats a CoAP code as "c.dd" (RFC 7252 §3).
func codeString(c codes.Code) string {
	return fmt.Sprintf("%d.%02d", uint8(c)>>5, uint8(c)&0x1f)
}

// payloadString renders a response payload for one output line: CBOR as
// JSON, text as is, anything else as hex.
func payloadString(r *sdk.Response) string {
	p := r.Payload
	if r.ContentFormat == sdk.CBOR && len(p) > 0 {
		var v any
		if err := cborDisplay.Unmarshal(p, &v); err == nil {
			if j, err := json.Marshal(v); err == nil {
				return string(j)
			}
		}
	}
	if utf8.Valid(p) && !bytes.ContainsAny(p, "\n\r\x00") {
		return string(p)
	}
	return "0x" + hex.EncodeToString(p)
}

// cborDisplay decodes CBOR maps with string keys, so they print as JSON.
var cborDisplay, _ = cbor.DecOptions{DefaultMapType: reflect.TypeOf(map[string]any(nil))}.DecMode()
