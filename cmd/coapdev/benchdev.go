package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/coapgate/coapgate/internal/api"
	"github.com/coapgate/coapgate/internal/auth/symmetric"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/sdk"
)

// benchDevice is one simulated device of coapdev bench.
type benchDevice struct {
	pk, dk, secret string

	// After auth (token and symmetric modes).
	token   string
	symKey  symmetric.Key
	nextSeq atomic.Uint64 // symmetric: next sequence number
}

func (d *benchDevice) topicPath() []string {
	return []string{"topic", "sys", d.pk, d.dk, "thing", "event", "property", "post"}
}

// benchSecret is the deterministic secret of bench device dk, so that a
// second run against the same gateway finds the devices it created.
func benchSecret(seed, dk string) string {
	h := sha256.Sum256([]byte(seed + "/" + dk))
	return hex.EncodeToString(h[:16])
}

// createDevices creates (or reuses) devices bench-0..n-1 of product pk
// through the management API.
func createDevices(ctx context.Context, c *api.Client, pk, seed string, n, par int) ([]*benchDevice, error) {
	devs := make([]*benchDevice, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range min(par, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				dk := "bench-" + strconv.Itoa(i)
				d := &benchDevice{pk: pk, dk: dk, secret: benchSecret(seed, dk)}
				_, err := c.Do(ctx, http.MethodPost, "/devices", nil, map[string]any{
					"productKey": pk, "deviceKey": dk, "deviceSecret": d.secret,
				})
				var ae *api.Error
				if errors.As(err, &ae) && ae.Status == http.StatusConflict {
					err = nil // created by an earlier run, with the same secret
				}
				if err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, fmt.Errorf("create device %s: %w", dk, err))
					mu.Unlock()
					return
				}
				devs[i] = d
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return devs, ctx.Err()
}

// readDevicesCSV reads "pk,dk,secret" lines; blank lines and lines starting
// with # are skipped.
func readDevicesCSV(r io.Reader) ([]*benchDevice, error) {
	var devs []*benchDevice
	sc := bufio.NewScanner(r)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) != 3 || f[0] == "" || f[1] == "" || f[2] == "" {
			return nil, fmt.Errorf("line %d: want pk,dk,secret", ln)
		}
		devs = append(devs, &benchDevice{pk: f[0], dk: f[1], secret: f[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(devs) == 0 {
		return nil, errors.New("no devices")
	}
	return devs, nil
}

func readDevicesFile(path string) ([]*benchDevice, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	devs, err := readDevicesCSV(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return devs, nil
}

// authDevices runs POST /auth for every device (par at a time) with the SDK.
func authDevices(ctx context.Context, server string, devs []*benchDevice, symmetricMode bool, timeout time.Duration, par int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, len(devs))
	for range min(par, len(devs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(devs) || ctx.Err() != nil {
					return
				}
				errs[i] = authDevice(ctx, server, devs[i], symmetricMode, timeout)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

func authDevice(ctx context.Context, server string, d *benchDevice, symmetricMode bool, timeout time.Duration) error {
	opts := []sdk.Option{sdk.WithCredentials(sdk.Credentials{ProductKey: d.pk, DeviceName: d.dk, DeviceSecret: d.secret})}
	if symmetricMode {
		opts = append(opts, sdk.WithSymmetric())
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := sdk.Dial(actx, server, opts...)
	if err != nil {
		return fmt.Errorf("auth %s/%s: %w", d.pk, d.dk, err)
	}
	defer c.Close()
	tok, err := c.Auth(actx)
	if err != nil {
		return fmt.Errorf("auth %s/%s: %w", d.pk, d.dk, err)
	}
	d.token = tok
	if symmetricMode {
		ss, ok := c.SymmetricSession()
		if !ok {
			return fmt.Errorf("auth %s/%s: no symmetric session in the answer", d.pk, d.dk)
		}
		d.symKey = symmetric.SessionKey(d.secret, ss.Random)
		d.nextSeq.Store(ss.SeqOffset + ss.Sent)
	}
	return nil
}

// encodeRequest encodes a CON request with a 2-byte CoAP token.
func encodeRequest(dst []byte, code codes.Code, mid uint16, path []string, opts message.Options, payload []byte) ([]byte, error) {
	o := make(message.Options, 0, len(path)+len(opts)+1)
	for _, s := range path {
		o = o.Add(message.Option{ID: message.URIPath, Value: []byte(s)})
	}
	for _, op := range opts {
		o = o.Add(op)
	}
	m := message.Message{
		Token: []byte{byte(mid >> 8), byte(mid)}, Code: code, MessageID: int32(mid),
		Type: message.Confirmable, Options: o, Payload: payload,
	}
	n, err := coder.DefaultCoder.Encode(m, dst)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return dst[:n], nil
}

// template is a pre-encoded request; build patches Message ID and token.
type template []byte

func (t template) build(dst []byte, mid uint16) ([]byte, error) {
	n := copy(dst, t)
	dst[2], dst[3], dst[4], dst[5] = byte(mid>>8), byte(mid), byte(mid>>8), byte(mid)
	return dst[:n], nil
}

func newTemplate(path []string, opts message.Options, payload []byte) (template, error) {
	b, err := encodeRequest(make([]byte, maxDatagram), codes.POST, 0, path, opts, payload)
	if err != nil {
		return nil, err
	}
	if len(b) > maxDatagram {
		return nil, fmt.Errorf("request of %d bytes exceeds one datagram", len(b))
	}
	return template(b), nil
}

// rotation cycles over several templates (devices sharing a socket).
type rotation struct {
	t []template
}

func (r *rotation) build(dst []byte, mid uint16) ([]byte, error) {
	// Retransmissions rebuild with the same MID: pick by MID, not by turn,
	// so the bytes are identical.
	return r.t[int(mid)%len(r.t)].build(dst, mid)
}

func cfOption(cf message.MediaType) message.Option {
	return message.Option{ID: message.ContentFormat, Value: encodeUint(uint32(cf))}
}

// encodeUint is the minimal big-endian uint option value (RFC 7252 §3.2).
func encodeUint(v uint32) []byte {
	switch {
	case v == 0:
		return nil
	case v < 1<<8:
		return []byte{byte(v)}
	case v < 1<<16:
		return []byte{byte(v >> 8), byte(v)}
	case v < 1<<24:
		return []byte{byte(v >> 16), byte(v >> 8), byte(v)}
	}
	return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// tokenTemplate is a token-mode publish of d.
func tokenTemplate(d *benchDevice, payload []byte) (template, error) {
	return newTemplate(d.topicPath(), message.Options{
		cfOption(sdk.JSON),
		{ID: message.Accept, Value: encodeUint(uint32(sdk.JSON))},
		{ID: 2088, Value: []byte(d.token)},
	}, payload)
}

// symBuilder encrypts a fresh sequence number and the payload per request
// (not deterministic: the lane keeps the bytes for retransmission).
type symBuilder struct {
	devs    []*benchDevice
	i       int
	payload []byte
}

func (s *symBuilder) build(dst []byte, mid uint16) ([]byte, error) {
	d := s.devs[s.i%len(s.devs)]
	s.i++
	seq := d.nextSeq.Add(1) - 1
	body, err := symmetric.Encrypt(d.symKey, []byte(symmetric.IV), s.payload)
	if err != nil {
		return nil, err
	}
	return encodeRequest(dst, codes.POST, mid, d.topicPath(), message.Options{
		cfOption(sdk.JSON),
		{ID: message.Accept, Value: encodeUint(uint32(sdk.JSON))},
		{ID: 2088, Value: []byte(d.token)},
		{ID: sdk.OptionSeq, Value: symmetric.EncryptSeq(d.symKey, seq)},
	}, body)
}

// benchPayload is a thing-model property post padded to size bytes (at
// least the unpadded JSON).
func benchPayload(size int) []byte {
	head := `{"id":"1","version":"1.0","method":"thing.event.property.post","params":{"v":"`
	tail := `"}}`
	pad := max(0, size-len(head)-len(tail))
	return []byte(head + strings.Repeat("x", pad) + tail)
}

// dtlsParams say how to open a DTLS-PSK session.
type dtlsParams struct {
	identity string
	key      []byte
	suites   []dtls.CipherSuiteID
	cid      bool
}

func gatewayPSK(d *benchDevice, lifetime int) (string, []byte) {
	id := dtlspsk.Identity{ProductKey: d.pk, DeviceKey: d.dk, SecureMode: 2, Lifetime: time.Duration(lifetime) * time.Second}
	return id.String(), dtlspsk.Key(d.secret)
}

// dialDTLS makes one full PSK handshake and returns the session; the UDP
// socket closes with it.
func dialDTLS(ctx context.Context, laddr, raddr *net.UDPAddr, p dtlsParams) (net.Conn, error) {
	pc, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, err
	}
	key := p.key
	opts := []dtls.ClientOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(p.identity)),
		dtls.WithCipherSuites(p.suites...),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
	}
	if p.cid {
		opts = append(opts, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
	}
	conn, err := dtls.ClientWithOptions(pc, raddr, opts...)
	if err != nil {
		pc.Close()
		return nil, err
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		pc.Close()
		return nil, fmt.Errorf("dtls handshake: %w", err)
	}
	return &dtlsSession{Conn: conn, pc: pc}, nil
}

type dtlsSession struct {
	*dtls.Conn
	pc net.PacketConn
}

func (d *dtlsSession) Close() error {
	err := d.Conn.Close()
	d.pc.Close()
	return err
}
