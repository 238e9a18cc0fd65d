package sdk

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Secure modes of a DTLS PSK identity (docs/protocol.md §2).
const (
	// SecureModeDevice keys the session with the device secret.
	SecureModeDevice = 2
	// SecureModeProduct keys the session with the product secret; the
	// session may only activate (Activate), then reconnect in mode 2.
	SecureModeProduct = 3
)

// DTLS cipher suites a PSK client may offer.
const (
	SuitePSKAES128CCM8      = uint16(dtls.TLS_PSK_WITH_AES_128_CCM_8)
	SuitePSKAES128CBCSHA256 = uint16(dtls.TLS_PSK_WITH_AES_128_CBC_SHA256)
)

// DTLSPSK configures CoAP over DTLS 1.2 with a PSK identity
// "{pk},{dk},{secureMode},{lifetime}" (docs/protocol.md §2). The session is the
// device: requests carry no token.
type DTLSPSK struct {
	ProductKey string
	DeviceName string
	// SecureMode is SecureModeDevice (2, the default) or SecureModeProduct (3).
	SecureMode int
	// Secret is the device secret (mode 2) or the product secret (mode 3).
	Secret string
	// Lifetime is how long the server keeps the device online and the
	// session open without a message: 30s..86400s, whole seconds (default 1h).
	Lifetime time.Duration
	// CipherSuites to offer (default both dialect suites, CCM_8 first).
	CipherSuites []uint16
	// DisableConnectionID turns off RFC 9146 Connection IDs (on by
	// default: the session survives a NAT rebinding).
	DisableConnectionID bool
}

// String never shows the secret.
func (p DTLSPSK) String() string {
	return "{" + p.identity() + " secret:[REDACTED]}"
}

// LogValue never shows the secret.
func (p DTLSPSK) LogValue() slog.Value { return slog.StringValue(p.String()) }

func (p DTLSPSK) identity() string {
	return dtlspsk.Identity{ProductKey: p.ProductKey, DeviceKey: p.DeviceName, SecureMode: p.SecureMode, Lifetime: p.Lifetime}.String()
}

func (p *DTLSPSK) fill() {
	if p.SecureMode == 0 {
		p.SecureMode = SecureModeDevice
	}
	if p.Lifetime == 0 {
		p.Lifetime = time.Hour
	}
	if len(p.CipherSuites) == 0 {
		p.CipherSuites = []uint16{SuitePSKAES128CCM8, SuitePSKAES128CBCSHA256}
	}
}

func (p DTLSPSK) validate() error {
	if _, err := dtlspsk.Parse([]byte(p.identity())); err != nil || p.Lifetime%time.Second != 0 {
		return fmt.Errorf("dtls psk identity %q: %w", p.identity(), errors.Join(err, errIf(p.Lifetime%time.Second != 0, "lifetime must be whole seconds")))
	}
	if p.Secret == "" {
		return errors.New("dtls psk: secret is empty")
	}
	return nil
}

func errIf(cond bool, msg string) error {
	if cond {
		return errors.New(msg)
	}
	return nil
}

// WithDTLSPSK makes Dial run a DTLS 1.2 PSK handshake (docs/protocol.md §2).
func WithDTLSPSK(p DTLSPSK) Option {
	return func(c *config) {
		p.fill()
		c.dtlsPSK = &p
	}
}

// DTLSCert configures CoAP over DTLS 1.2 with a server certificate
// (ECDHE-ECDSA suites, docs/protocol.md §3.6). The device then authenticates
// with POST /auth and a token as on port 5683 (WithCredentials).
type DTLSCert struct {
	// RootCAs verifies the server certificate (nil: the system roots).
	RootCAs *x509.CertPool
	// ServerName is checked against the certificate (default: addr's host).
	ServerName string
	// InsecureSkipVerify accepts any server certificate (development only).
	InsecureSkipVerify bool
	// DisableConnectionID turns off RFC 9146 Connection IDs.
	DisableConnectionID bool
}

// WithDTLSCert makes Dial run a certificate DTLS 1.2 handshake.
func WithDTLSCert(p DTLSCert) Option {
	return func(c *config) { c.dtlsCert = &p }
}

// dialDTLS opens a DTLS session to addr, with a PSK identity (p) or a
// server certificate (cert).
func dialDTLS(ctx context.Context, addr string, p *DTLSPSK, cert *DTLSCert) (net.Conn, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("sdk: resolve %s: %w", addr, err)
	}
	pc, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, fmt.Errorf("sdk: dial %s: %w", addr, err)
	}
	if cert != nil {
		name := cert.ServerName
		if name == "" {
			name, _, _ = net.SplitHostPort(addr)
		}
		opts := []dtls.ClientOption{
			dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
			dtls.WithRootCAs(cert.RootCAs), dtls.WithServerName(name),
			dtls.WithInsecureSkipVerify(cert.InsecureSkipVerify),
			dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
		}
		if !cert.DisableConnectionID {
			opts = append(opts, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
		}
		return handshakeDTLS(ctx, pc, raddr, addr, opts)
	}
	suites := make([]dtls.CipherSuiteID, len(p.CipherSuites))
	for i, s := range p.CipherSuites {
		suites[i] = dtls.CipherSuiteID(s)
	}
	key := dtlspsk.Key(p.Secret)
	opts := []dtls.ClientOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(p.identity())),
		dtls.WithCipherSuites(suites...),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
	}
	if !p.DisableConnectionID {
		// Ask the server for a CID to send on every record; the client
		// needs none from the server (it does not change address).
		opts = append(opts, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
	}
	return handshakeDTLS(ctx, pc, raddr, addr, opts)
}

func handshakeDTLS(ctx context.Context, pc net.PacketConn, raddr *net.UDPAddr, addr string, opts []dtls.ClientOption) (net.Conn, error) {
	conn, err := dtls.ClientWithOptions(pc, raddr, opts...)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("sdk: dtls %s: %w", addr, err)
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		pc.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrHandshake, addr, err)
	}
	return &dtlsConn{Conn: conn, pc: pc}, nil
}

// ErrHandshake means the DTLS handshake failed: refused identity, wrong
// secret (the server answers decrypt_error), or no answer.
var ErrHandshake = errors.New("sdk: dtls handshake failed")

// dtlsConn closes the UDP socket with the session.
type dtlsConn struct {
	*dtls.Conn
	pc net.PacketConn
}

func (d *dtlsConn) Close() error {
	err := d.Conn.Close()
	d.pc.Close()
	return err
}

// Activation is the answer of thing.activate.info (docs/protocol.md §2).
type Activation struct {
	AssetID      string
	ProductKey   string
	DeviceName   string
	DeviceSecret string
}

// Activate fetches the device secret on a secureMode 3 session:
// GET /topic/ext/session/{pk}/{dk}/thing/activate/info. The device then
// reconnects in secureMode 2 with the secret (DialActivated does both).
func (c *Client) Activate(ctx context.Context) (*Activation, error) {
	p := c.cfg.dtlsPSK
	if p == nil || p.SecureMode != SecureModeProduct {
		return nil, fmt.Errorf("%w: Activate needs a secureMode 3 DTLS session", ErrInvalidOption)
	}
	resp, err := c.send(ctx, &request{
		code: codes.GET, confirmable: true,
		path: []string{"topic", "ext", "session", p.ProductKey, p.DeviceName, "thing", "activate", "info"},
	}, 0)
	if err != nil {
		return nil, err
	}
	if resp.Code != codes.Content {
		return nil, statusError(resp)
	}
	var body struct {
		Method string `json:"method"`
		Params struct {
			AssetID      string `json:"assetId"`
			ProductKey   string `json:"productKey"`
			DeviceKey    string `json:"deviceKey"`
			DeviceSecret string `json:"deviceSecret"`
		} `json:"params"`
	}
	if err := json.Unmarshal(resp.Payload, &body); err != nil || body.Params.DeviceSecret == "" {
		return nil, fmt.Errorf("%w: activation answer: %q", ErrMalformed, resp.Payload)
	}
	return &Activation{AssetID: body.Params.AssetID, ProductKey: body.Params.ProductKey, DeviceName: body.Params.DeviceKey, DeviceSecret: body.Params.DeviceSecret}, nil
}

// DialActivated activates a device with its product secret (secureMode 3)
// and returns a Client on a secureMode 2 session keyed with the device
// secret it received, which it returns too (store it: later starts dial
// mode 2 directly).
func DialActivated(ctx context.Context, addr string, p DTLSPSK, opts ...Option) (*Client, *Activation, error) {
	p.SecureMode = SecureModeProduct
	c3, err := Dial(ctx, addr, append(opts, WithDTLSPSK(p))...)
	if err != nil {
		return nil, nil, err
	}
	act, err := c3.Activate(ctx)
	c3.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("activate: %w", err)
	}
	p.SecureMode, p.Secret = SecureModeDevice, act.DeviceSecret
	c, err := Dial(ctx, addr, append(opts, WithDTLSPSK(p))...)
	if err != nil {
		return nil, act, err
	}
	return c, act, nil
}
