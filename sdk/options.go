package sdk

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/coapgate/coapgate/internal/auth/devsign"
)

// Option numbers of the platform (docs/protocol.md §3.2).
const (
	// OptionToken2088 carries the auth token, as the platform documents name it.
	OptionToken2088 message.OptionID = 2088
	// OptionToken61 carries the auth token, as SDK v3.x and third-party modules send it.
	OptionToken61 message.OptionID = 61
	// OptionMessageID is the response option holding the platform message ID
	// (decimal ASCII) of an uplink.
	OptionMessageID message.OptionID = 2090
	// OptionSeq carries the encrypted sequence number of a symmetric-mode
	// uplink (docs/protocol.md §3.4).
	OptionSeq message.OptionID = 2089
)

// DefaultSymmetricPort is the gateway's symmetric-encryption port; plain
// CoAP is on 5683.
const DefaultSymmetricPort = 5682

// Content formats the SDK can label a body with.
const (
	JSON  message.MediaType = 50 // application/json
	CBOR  message.MediaType = 60 // application/cbor
	Octet message.MediaType = 42 // application/octet-stream
)

// DefaultBlockSize is the Block1 size used when WithBlockSize is not given
// (SZX 6, RFC 7959 §2.2).
const DefaultBlockSize = 1024

// TransmissionParams are the RFC 7252 §4.8 transmission parameters of a Client.
type TransmissionParams struct {
	// AckTimeout is ACK_TIMEOUT, the base of the initial retransmission timeout.
	AckTimeout time.Duration
	// AckRandomFactor is ACK_RANDOM_FACTOR (>= 1): the initial timeout is drawn
	// from [AckTimeout, AckTimeout*AckRandomFactor].
	AckRandomFactor float64
	// MaxRetransmit is MAX_RETRANSMIT, the number of retransmissions of a CON
	// message before the request fails with ErrTimeout.
	MaxRetransmit int
	// SeparateTimeout bounds the wait for a separate response after the
	// server's empty ACK (RFC 7252 §5.2.2). Zero means MaxTransmitWait().
	SeparateTimeout time.Duration
}

// DefaultTransmissionParams returns the RFC 7252 §4.8 defaults:
// ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5, MAX_RETRANSMIT 4.
func DefaultTransmissionParams() TransmissionParams {
	return TransmissionParams{AckTimeout: 2 * time.Second, AckRandomFactor: 1.5, MaxRetransmit: 4}
}

func (p TransmissionParams) validate() error {
	var errs []error
	if p.AckTimeout <= 0 {
		errs = append(errs, errors.New("ack timeout must be positive"))
	}
	if p.AckRandomFactor < 1 {
		errs = append(errs, errors.New("ack random factor must be >= 1"))
	}
	if p.MaxRetransmit < 0 || p.MaxRetransmit > 20 {
		errs = append(errs, errors.New("max retransmit must be in 0..20"))
	}
	if p.SeparateTimeout < 0 {
		errs = append(errs, errors.New("separate timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// Credentials identify a device for POST /auth (docs/protocol.md §3.1).
type Credentials struct {
	ProductKey   string
	DeviceName   string
	DeviceSecret string
	// ClientID defaults to ProductKey + "." + DeviceName.
	ClientID string
	// SignMethod is hmacmd5 (the default when empty), hmacsha1 or hmacsha256.
	SignMethod string
}

// LogValue redacts the device secret when Credentials are logged with slog.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("productKey", c.ProductKey),
		slog.String("deviceName", c.DeviceName),
		slog.String("clientId", c.clientID()),
		slog.String("deviceSecret", "REDACTED"),
	)
}

// String redacts the device secret when Credentials are printed with fmt.
func (c Credentials) String() string {
	return fmt.Sprintf("{ProductKey:%s DeviceName:%s ClientID:%s DeviceSecret:REDACTED}", c.ProductKey, c.DeviceName, c.clientID())
}

// GoString redacts the device secret in %#v.
func (c Credentials) GoString() string { return "sdk.Credentials" + c.String() }

func (c Credentials) clientID() string {
	if c.ClientID != "" {
		return c.ClientID
	}
	return c.ProductKey + "." + c.DeviceName
}

func (c Credentials) complete() bool {
	return c.ProductKey != "" && c.DeviceName != "" && c.DeviceSecret != ""
}

// config is what the Options of Dial build.
type config struct {
	params        TransmissionParams
	tokenOption   message.OptionID
	contentFormat message.MediaType
	blockSize     int
	creds         Credentials
	hasCreds      bool
	token         string
	symmetric     bool
	dtlsPSK       *DTLSPSK       // nil: plain UDP
	dtlsCert      *DTLSCert      // nil: no certificate DTLS
	cmdHandler    CommandHandler // nil: commands are not taken
}

func defaultConfig() config {
	return config{
		params:        DefaultTransmissionParams(),
		tokenOption:   OptionToken2088,
		contentFormat: JSON,
		blockSize:     DefaultBlockSize,
	}
}

func (c *config) validate() error {
	var errs []error
	if err := c.params.validate(); err != nil {
		errs = append(errs, fmt.Errorf("transmission params: %w", err))
	}
	if c.tokenOption != OptionToken2088 && c.tokenOption != OptionToken61 {
		errs = append(errs, fmt.Errorf("token option %d: must be 61 or 2088", c.tokenOption))
	}
	if c.contentFormat != JSON && c.contentFormat != CBOR {
		errs = append(errs, fmt.Errorf("content format %d: must be 50 (JSON) or 60 (CBOR)", c.contentFormat))
	}
	if _, err := blockSZX(c.blockSize); err != nil {
		errs = append(errs, err)
	}
	if c.hasCreds {
		if !c.creds.complete() {
			errs = append(errs, errors.New("credentials need product key, device name and device secret"))
		}
		if _, err := devsign.ParseMethod(c.creds.SignMethod); err != nil {
			errs = append(errs, err)
		}
	}
	if c.dtlsPSK != nil {
		if err := c.dtlsPSK.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if (c.dtlsPSK != nil || c.dtlsCert != nil) && c.symmetric {
		errs = append(errs, errors.New("symmetric mode and DTLS exclude each other"))
	}
	if c.dtlsPSK != nil && c.dtlsCert != nil {
		errs = append(errs, errors.New("WithDTLSPSK and WithDTLSCert exclude each other"))
	}
	if c.symmetric && !c.hasCreds {
		errs = append(errs, errors.New("symmetric mode needs credentials (the session key derives from the device secret)"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return nil
}

// blockSZX maps a block size to its RFC 7959 §2.2 SZX (16..1024, powers of two).
func blockSZX(size int) (blockwise.SZX, error) {
	for szx := blockwise.SZX16; szx <= blockwise.SZX1024; szx++ {
		if int(szx.Size()) == size {
			return szx, nil
		}
	}
	return 0, fmt.Errorf("block size %d: must be a power of two in 16..1024", size)
}

// An Option configures a Client in Dial.
type Option func(*config)

// WithTransmissionParams sets the RFC 7252 §4.8 retransmission parameters.
func WithTransmissionParams(p TransmissionParams) Option {
	return func(c *config) { c.params = p }
}

// WithTokenOption selects the option carrying the auth token: 2088 (the
// default, as documented by the platform) or 61 (as SDK v3.x modules send it).
func WithTokenOption(id message.OptionID) Option {
	return func(c *config) { c.tokenOption = id }
}

// WithContentFormat selects the body format of /auth and of the thing-model
// helpers: JSON (50, the default) or CBOR (60).
func WithContentFormat(cf message.MediaType) Option {
	return func(c *config) { c.contentFormat = cf }
}

// WithBlockSize sets the RFC 7959 Block1 size (16..1024, a power of two,
// default 1024). Request bodies larger than this are sent block-wise.
func WithBlockSize(n int) Option {
	return func(c *config) { c.blockSize = n }
}

// WithCredentials sets the device credentials used by Auth, by the automatic
// authentication before the first publish and by the re-authentication on 4.01.
func WithCredentials(cr Credentials) Option {
	return func(c *config) { c.creds, c.hasCreds = cr, true }
}

// WithSymmetric selects the symmetric-encryption mode of the platform
// (docs/protocol.md §3.4; the gateway serves it on port 5682, DefaultSymmetricPort):
// Auth sends seq and keeps the session the server returns (random,
// seqOffset, and the key SHA-256(secret+","+random)[8:24]); Publish encrypts
// the payload with AES-128-CBC, sends the next sequence number encrypted in
// option 2089 (starting at seqOffset) and decrypts the reply. It needs
// WithCredentials: the key derives from the device secret. A token given by
// WithToken has no session and is not used in this mode.
func WithSymmetric() Option {
	return func(c *config) { c.symmetric = true }
}

// WithToken starts the Client with a token obtained earlier (for example a
// cached one), so the first publish needs no POST /auth.
func WithToken(token string) Option {
	return func(c *config) { c.token = token }
}

// A PublishOption configures one Publish.
type PublishOption func(*publishConfig)

type publishConfig struct {
	nonConfirmable bool
	waitNON        time.Duration
	contentFormat  message.MediaType
	accept         message.MediaType
}

// NonConfirmable sends the publish as a NON message (RFC 7252 §4.3). Publish
// returns once the datagram is sent, with a nil Response, unless
// WaitNONResponse is given too.
func NonConfirmable() PublishOption {
	return func(p *publishConfig) { p.nonConfirmable = true }
}

// WaitNONResponse makes a NON publish wait up to d for the server's NON
// response; no response in time is ErrTimeout. It implies NonConfirmable.
func WaitNONResponse(d time.Duration) PublishOption {
	return func(p *publishConfig) { p.nonConfirmable, p.waitNON = true, d }
}

// ContentFormat labels the payload with cf (default JSON, 50). The SDK does
// not transcode the payload.
func ContentFormat(cf message.MediaType) PublishOption {
	return func(p *publishConfig) { p.contentFormat = cf }
}

// Accept sets the Accept option of the publish (default JSON, 50).
func Accept(cf message.MediaType) PublishOption {
	return func(p *publishConfig) { p.accept = cf }
}
