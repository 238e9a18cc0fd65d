package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/coapgate/coapgate/sdk"
)

// deviceFlags are the connection and credential flags shared by commands.
type deviceFlags struct {
	server      string
	product     string
	device      string
	secret      string
	clientID    string
	signMethod  string
	cbor        bool
	timeout     time.Duration
	tokenOption uint
	blockSize   int
	mode        string
	dtls        bool
	secureMode  int
	lifetime    int
	// activated is set by dial after a secureMode 3 activation.
	activated *sdk.Activation
}

// Modes of --mode.
const (
	modePlain     = "plain"
	modeSymmetric = "symmetric"
)

func addDeviceFlags(fs *flag.FlagSet) *deviceFlags {
	d := &deviceFlags{}
	fs.StringVar(&d.server, "server", "127.0.0.1:5683", "CoAP server `host:port`; with --mode symmetric the default is 127.0.0.1:5682")
	fs.StringVar(&d.product, "product", "", "product key (or env COAPDEV_PRODUCT)")
	fs.StringVar(&d.device, "device", "", "device name (or env COAPDEV_DEVICE)")
	fs.StringVar(&d.secret, "secret", "", "device secret (or env COAPDEV_SECRET, preferred: keeps it out of shell history)")
	fs.StringVar(&d.clientID, "client-id", "", "clientId sent in /auth (default \"<product>.<device>\")")
	fs.StringVar(&d.signMethod, "sign-method", "hmacmd5", "signature method: hmacmd5, hmacsha1 or hmacsha256")
	fs.BoolVar(&d.cbor, "cbor", false, "use CBOR (Content-Format 60) instead of JSON (50)")
	fs.DurationVar(&d.timeout, "timeout", 10*time.Second, "give up on a request after this long")
	fs.UintVar(&d.tokenOption, "token-option", 2088, "CoAP option carrying the auth token: 2088 or 61")
	fs.IntVar(&d.blockSize, "block-size", sdk.DefaultBlockSize, "RFC 7959 Block1 size for large payloads (16..1024)")
	fs.StringVar(&d.mode, "mode", modePlain, "plain (token auth, port 5683) or symmetric (AES-encrypted payloads and\nsequence numbers, port 5682)")
	fs.BoolVar(&d.dtls, "dtls", false, "CoAP over DTLS-PSK (port 5684 unless --server is given): identity\n\"<product>,<device>,<secure-mode>,<lifetime>\", no token")
	fs.IntVar(&d.secureMode, "secure-mode", 2, "with --dtls: 2 (key from the device secret) or 3 (--secret is the\nproduct secret: activate, print the device secret, reconnect in mode 2)")
	fs.IntVar(&d.lifetime, "lifetime", 3600, "with --dtls: seconds the device stays online without a message (30..86400)")
	return d
}

// addDTLSDeviceFlags registers only what a DTLS-PSK session of secure mode
// 2 needs (dtls-load): server (default the DTLS port 5684), credentials,
// lifetime and timeout.
func addDTLSDeviceFlags(fs *flag.FlagSet) *deviceFlags {
	d := &deviceFlags{mode: modePlain, dtls: true, secureMode: 2, signMethod: "hmacmd5", tokenOption: 2088, blockSize: sdk.DefaultBlockSize}
	fs.StringVar(&d.server, "server", "127.0.0.1:5684", "DTLS server `host:port` (the gateway's dtls.listen)")
	fs.StringVar(&d.product, "product", "", "product key (or env COAPDEV_PRODUCT)")
	fs.StringVar(&d.device, "device", "", "device name (or env COAPDEV_DEVICE)")
	fs.StringVar(&d.secret, "secret", "", "device secret (or env COAPDEV_SECRET, preferred: keeps it out of shell history)")
	fs.DurationVar(&d.timeout, "timeout", 10*time.Second, "give up on a handshake or request after this long")
	fs.IntVar(&d.lifetime, "lifetime", 3600, "lifetime in the PSK identity: seconds the device stays online without a message (30..86400)")
	return d
}

// resolve checks --mode and picks the symmetric port when --server was not
// given; it returns a usage problem or "".
func (d *deviceFlags) resolve(fs *flag.FlagSet) string {
	if d.dtls {
		if d.mode != modePlain {
			return "--dtls excludes --mode symmetric"
		}
		if d.secureMode != 2 && d.secureMode != 3 {
			return fmt.Sprintf("--secure-mode %d: want 2 or 3", d.secureMode)
		}
		if d.lifetime < 30 || d.lifetime > 86400 {
			return fmt.Sprintf("--lifetime %d: want 30..86400", d.lifetime)
		}
		if !isFlagSet(fs, "server") {
			d.server = "127.0.0.1:5684"
		}
		return ""
	}
	switch d.mode {
	case modePlain:
	case modeSymmetric:
		if !isFlagSet(fs, "server") {
			d.server = "127.0.0.1:" + strconv.Itoa(sdk.DefaultSymmetricPort)
		}
	default:
		return fmt.Sprintf("--mode %q: want plain or symmetric", d.mode)
	}
	return ""
}

// applyEnv fills credentials left empty on the command line from the environment.
func (d *deviceFlags) applyEnv(getenv func(string) string) {
	if d.product == "" {
		d.product = getenv("COAPDEV_PRODUCT")
	}
	if d.device == "" {
		d.device = getenv("COAPDEV_DEVICE")
	}
	if d.secret == "" {
		d.secret = getenv("COAPDEV_SECRET")
	}
}

// missing names the credentials that are not set.
func (d *deviceFlags) missing() []string {
	var m []string
	if d.product == "" {
		m = append(m, "--product (COAPDEV_PRODUCT)")
	}
	if d.device == "" {
		m = append(m, "--device (COAPDEV_DEVICE)")
	}
	if d.secret == "" {
		m = append(m, "--secret (COAPDEV_SECRET)")
	}
	return m
}

func (d *deviceFlags) contentFormat() message.MediaType {
	if d.cbor {
		return sdk.CBOR
	}
	return sdk.JSON
}

// dial connects with the flags; withCreds false dials without credentials.
func (d *deviceFlags) dial(ctx context.Context, withCreds bool, extra ...sdk.Option) (*sdk.Client, error) {
	opts := []sdk.Option{
		sdk.WithContentFormat(d.contentFormat()),
		sdk.WithTokenOption(message.OptionID(d.tokenOption)),
		sdk.WithBlockSize(d.blockSize),
	}
	if d.mode == modeSymmetric {
		opts = append(opts, sdk.WithSymmetric())
	}
	if d.dtls {
		p := sdk.DTLSPSK{ProductKey: d.product, DeviceName: d.device, Secret: d.secret,
			SecureMode: d.secureMode, Lifetime: time.Duration(d.lifetime) * time.Second}
		dctx, cancel := context.WithTimeout(ctx, d.timeout)
		defer cancel()
		if d.secureMode == sdk.SecureModeProduct {
			c, act, err := sdk.DialActivated(dctx, d.server, p, append(opts, extra...)...)
			d.activated = act
			return c, err
		}
		return sdk.Dial(dctx, d.server, append(append(opts, sdk.WithDTLSPSK(p)), extra...)...)
	}
	if withCreds {
		opts = append(opts, sdk.WithCredentials(sdk.Credentials{
			ProductKey:   d.product,
			DeviceName:   d.device,
			DeviceSecret: d.secret,
			ClientID:     d.clientID,
			SignMethod:   d.signMethod,
		}))
	}
	return sdk.Dial(ctx, d.server, append(opts, extra...)...)
}

// dialError maps a Dial error to an exit code and message.
func dialError(e *env, name string, err error) int {
	fmt.Fprintf(e.stderr, "coapdev %s: %v\n", name, err)
	if errors.Is(err, sdk.ErrInvalidOption) {
		return exitUsage
	}
	return exitError
}
