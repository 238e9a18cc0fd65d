// Package config holds coapgate's configuration: one Config struct with
// Default, Load (YAML file, then COAPGATE_* environment, then flags) and
// Validate. It imports no adapters; cmd/coapgate picks them.
package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Secret is a configuration value that must not be logged or printed.
type Secret string

// String redacts the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[REDACTED]"
}

// LogValue redacts the secret for slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalYAML redacts the secret in --print-config output.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// Config is the whole gateway configuration.
type Config struct {
	// DataDir holds the embedded database, the token key and generated
	// certificates.
	DataDir  string    `yaml:"data_dir"`
	Log      LogConfig `yaml:"log"`
	CoAP     CoAP      `yaml:"coap"`
	DTLS     DTLS      `yaml:"dtls"`
	Auth     Auth      `yaml:"auth"`
	API      API       `yaml:"api"`
	Store    Store     `yaml:"store"`
	Commands Commands  `yaml:"commands"`
	Forward  Forward   `yaml:"forward"`
	// Retention bounds how long stored data is kept (internal/retention).
	Retention Retention `yaml:"retention"`
	Cluster   Cluster   `yaml:"cluster"`
	// Warnings are what Load has to tell about the configuration it read
	// (settings that were removed but are still accepted); the caller logs
	// them.
	Warnings []string `yaml:"-"`
}

// Retention configures the retention worker. Periods of 0 keep data
// forever; products may override messages, points, events and commands.
type Retention struct {
	// Messages is how long message log entries (uplinks and lifecycle
	// entries) are kept.
	Messages time.Duration `yaml:"messages"`
	// Points is how long point samples are kept (latest values stay).
	Points time.Duration `yaml:"points"`
	// Rollups1m and Rollups1h keep the 1-minute and 1-hour point
	// rollups; each is kept at least as long as the samples (and the
	// 1-hour ones at least as long as the 1-minute ones).
	Rollups1m time.Duration `yaml:"rollups_1m"`
	Rollups1h time.Duration `yaml:"rollups_1h"`
	// Events is how long device online/offline events are kept.
	Events time.Duration `yaml:"events"`
	// Commands is how long finished downlink commands are kept.
	Commands time.Duration `yaml:"commands"`
	// DeadLetters is how long forwarding dead letters are kept.
	DeadLetters time.Duration `yaml:"dead_letters"`
	// Interval is the wait between two retention runs.
	Interval time.Duration `yaml:"interval"`
	// BatchSize bounds the rows deleted per transaction (1..5000).
	BatchSize int `yaml:"batch_size"`
	// BatchPause is the least wait between two batches (the worker also
	// waits as long as the last batch took), so that ingest's commits go
	// first.
	BatchPause time.Duration `yaml:"batch_pause"`
}

// Cluster configures what several gateway nodes share: nodes on one
// PostgreSQL database (store.driver postgres), and device changes over
// NATS. A single node needs none of it.
type Cluster struct {
	// Node names this node in logs and in PostgreSQL's pg_stat_activity
	// (default: the host name).
	Node string `yaml:"node"`
	// LeaseRetry is how often a standby node tries to take the leases of
	// background work (point projector, forwarding actions) and how often
	// a holder checks its lease connection.
	LeaseRetry time.Duration `yaml:"lease_retry"`
	// NATSURL, when set, carries device changes (revoke-tokens,
	// rotate-secret, disable, delete) to every node through NATS, so they
	// end tokens' and DTLS sessions' validity on all nodes within a
	// second. Empty: changes stay within this node.
	NATSURL Secret `yaml:"nats_url"`
	// DTLSSessions shares the native DTLS engine's sessions with the other
	// nodes through a JetStream key-value bucket on NATSURL, so a device
	// continues on another node without a new handshake when its node
	// dies or its address changes (connection ID). Needs NATSURL.
	DTLSSessions bool `yaml:"dtls_sessions"`
	// DTLSAddressSessions also shares sessions without a connection ID, by
	// the device's address: only behind a balancer that preserves the
	// client address (IPVS, a network load balancer), never behind a
	// proxy such as nginx.
	DTLSAddressSessions bool `yaml:"dtls_address_sessions"`
	// DTLSSeqReserve is how many record sequence numbers a node reserves
	// at a time for a shared session (a new reservation is stored when
	// half is used).
	DTLSSeqReserve int `yaml:"dtls_seq_reserve"`
	// DTLSBucket names the key-value bucket of shared sessions.
	DTLSBucket string `yaml:"dtls_bucket"`
}

// Forward configures the forwarding rules' workers (internal/forward).
type Forward struct {
	// BackoffBase is the wait after a first failed delivery; it doubles
	// per attempt (with jitter) up to BackoffMax.
	BackoffBase time.Duration `yaml:"backoff_base"`
	BackoffMax  time.Duration `yaml:"backoff_max"`
	// ShutdownTimeout bounds how long in-flight deliveries may finish at
	// shutdown before they are aborted (and redelivered after restart).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Commands configures downlink commands (docs/protocol.md §2.1).
type Commands struct {
	// Push sends a new command at once to a device with a live session
	// (DTLS, or plain UDP seen within its lifetime) as a CON request;
	// devices that ignore it still get option 2100 on their next uplink.
	Push bool `yaml:"push"`
	// PushTimeout is the ACK_TIMEOUT of a push (RFC 7252 §4.8), doubled
	// per retransmission.
	PushTimeout time.Duration `yaml:"push_timeout"`
	// PushRetransmit is MAX_RETRANSMIT of a push.
	PushRetransmit int `yaml:"push_retransmit"`
	// DefaultTTL applies to commands created without a ttl.
	DefaultTTL time.Duration `yaml:"default_ttl"`
	// MaxTTL bounds the ttl of a command.
	MaxTTL time.Duration `yaml:"max_ttl"`
}

// LogConfig selects log level and format.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// CoAP configures the plain CoAP/UDP listener (RFC 7252).
type CoAP struct {
	// Listen is the UDP address of the token-auth listener (default :5683).
	Listen string `yaml:"listen"`
	// Workers bounds concurrent request handling.
	Workers int `yaml:"workers"`
	// Queue is the number of datagrams waiting for a worker before new CON
	// requests are answered 5.03.
	Queue int `yaml:"queue"`
	// ReadBuffer is the socket receive buffer requested (SO_RCVBUF), bytes.
	ReadBuffer int `yaml:"read_buffer"`
	// MaxBody is the largest request body accepted (Block1 reassembled);
	// larger requests get 4.13 with Size1.
	MaxBody int `yaml:"max_body"`
	// BlockSize is the Block2 size for large responses (16..1024, power of 2).
	BlockSize int `yaml:"block_size"`
	// DedupEntries bounds the duplicate-detection / response cache.
	DedupEntries int `yaml:"dedup_entries"`
	// ExchangeLifetime is how long a CON's response is replayed to
	// duplicates (RFC 7252 §4.8.2: 247 s).
	ExchangeLifetime time.Duration `yaml:"exchange_lifetime"`
	// NonLifetime is how long a NON's Message ID is remembered (145 s).
	NonLifetime time.Duration `yaml:"non_lifetime"`
	// SymmetricListen is the UDP address of the token dialect's symmetric-encryption
	// listener (docs/protocol.md §3.4, default :5682); empty disables it. It
	// shares every other coap.* setting with the plain listener.
	SymmetricListen string `yaml:"symmetric_listen"`
	// ReplayWindow is how many sequence numbers below the highest one seen
	// a session remembers (options 2089 and 2101); older ones are refused.
	ReplayWindow int `yaml:"replay_window"`
	// ReplaySessions bounds the sessions whose replay state a node holds;
	// a token whose state was evicted must re-authenticate.
	ReplaySessions int `yaml:"replay_sessions"`
	// BlockPeerBudget bounds the bytes one peer's Block1 transfers in
	// progress may reserve (a transfer reserves its Size1, or max_body).
	BlockPeerBudget int `yaml:"block_peer_budget"`
	// BlockBudget bounds the bytes all Block1 transfers in progress of a
	// listener may reserve together.
	BlockBudget int `yaml:"block_budget"`
	// BlockTransfers bounds the Block1 transfers in progress of a listener.
	BlockTransfers int `yaml:"block_transfers"`
	// SymmetricOnPlain lets the plain listener take the symmetric mode too
	// (an /auth carrying seq, uplinks with option 2089), as firmware whose
	// symmetric URL names port 5683 expects.
	SymmetricOnPlain bool `yaml:"symmetric_on_plain"`
}

// DTLS configures the CoAP-over-DTLS 1.2 listener (docs/protocol.md §2, §3.6).
type DTLS struct {
	// Listen is the UDP address (default :5684); empty disables DTLS.
	Listen string `yaml:"listen"`
	// CertFile and KeyFile are the server certificate (PEM) for
	// certificate clients; both empty: a self-signed ECDSA development
	// certificate is generated into DataDir on first start.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ConnectionID negotiates RFC 9146 Connection IDs with clients that
	// offer them, so a session survives a NAT rebinding.
	ConnectionID bool `yaml:"connection_id"`
	// MaxSessions bounds established sessions plus handshakes in flight.
	MaxSessions int `yaml:"max_sessions"`
	// MaxHandshakes bounds handshakes in flight (verified ClientHellos;
	// a ClientHello without a valid cookie holds no state); from half of
	// it the node is under pressure.
	MaxHandshakes int `yaml:"max_handshakes"`
	// MaxHandshakesPerAddress bounds the handshakes in flight from one
	// source IP address under pressure; 0 means an eighth of
	// MaxHandshakes.
	MaxHandshakesPerAddress int `yaml:"max_handshakes_per_address"`
	// HandshakeRate is the new handshakes allowed per second per source IP
	// address (also the burst) while the node is under pressure; 0
	// disables the limit.
	HandshakeRate int `yaml:"handshake_rate"`
	// HandshakeTimeout bounds a whole handshake.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// IdleTimeout closes certificate sessions (no PSK lifetime) after this
	// long without a datagram.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Suites are the cipher suites offered, IANA names in the server's
	// preference order (docs/compatibility.md, suite choice); empty: the
	// certificate's suites, then the dialect's two PSK suites.
	Suites List `yaml:"suites"`
	// KeepSessions keeps established sessions in DataDir (sealed with the
	// store's secret key) so that devices continue after a restart of the
	// node without a new handshake; off in a cluster sharing its sessions
	// through NATS (cluster.dtls_sessions), which does the same across
	// nodes.
	KeepSessions bool `yaml:"keep_sessions"`
}

// Auth configures device authentication.
type Auth struct {
	// TokenTTL is the lifetime of tokens issued by POST /auth, sliding: a
	// token stays valid while its device had an accepted contact within it.
	TokenTTL time.Duration `yaml:"token_ttl"`
	// TokenMaxAge caps a token's validity from its issue time whatever the
	// device's activity; 0 means no cap.
	TokenMaxAge time.Duration `yaml:"token_max_age"`
	// TokenKey signs tokens (hex, 32 bytes). Every gateway node of a
	// cluster needs the same key. Empty: generated into DataDir/token.key.
	TokenKey Secret `yaml:"token_key"`
	// OnlineLifetime is how long a token device stays online after its
	// last message unless its product sets its own.
	OnlineLifetime time.Duration `yaml:"online_lifetime"`
	// DeviceCacheTTL bounds how stale a cached device record may be.
	DeviceCacheTTL time.Duration `yaml:"device_cache_ttl"`
	// DeviceCacheEntries bounds the cached known devices of each listener (LRU).
	DeviceCacheEntries int `yaml:"device_cache_entries"`
	// DialectEIV is the AES-CBC IV of the PSK dialect's option 2101 (docs/protocol.md
	// §2.2; not published): 16 ASCII characters or 32 hex digits.
	DialectEIV string `yaml:"dialect_e_iv"`
}

// DefaultDialectEIV is the token-dialect IV (docs/protocol.md §3.4), the default of
// auth.dialect_e_iv.
const DefaultDialectEIV = "543yhjy97ae7fyfg"

// SignEIV returns the 16-byte IV that DialectEIV names.
func (a Auth) SignEIV() ([]byte, error) {
	switch len(a.DialectEIV) {
	case 16:
		return []byte(a.DialectEIV), nil
	case 32:
		b, err := hex.DecodeString(a.DialectEIV)
		if err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("auth.dialect_e_iv %q: want 16 ASCII characters or 32 hex digits", a.DialectEIV)
}

// API configures the management HTTP API.
type API struct {
	Listen string `yaml:"listen"`
	// PprofListen is a TCP address serving net/http/pprof for profiling;
	// empty (the default) serves nothing. Bind it to loopback: it has no
	// authentication.
	PprofListen string `yaml:"pprof_listen"`
}

// Store configures persistence.
type Store struct {
	// Driver is "sqlite" (embedded, default) or "postgres".
	Driver string `yaml:"driver"`
	// SQLitePath defaults to DataDir/coapgate.db.
	SQLitePath string `yaml:"sqlite_path"`
	// PostgresURL is the PostgreSQL connection URL for driver "postgres"
	// (it may hold a password: never logged, redacted in --print-config).
	PostgresURL Secret `yaml:"postgres_url"`
	// SecretKeyFile holds the keys that encrypt device, product and rule
	// secrets in the database; default DataDir/secret.key, created (0600)
	// on first start. Every node sharing a database needs the same file.
	SecretKeyFile string `yaml:"secret_key_file"`
	// SecretKeys, when set, replaces the key file: its text ("<id>
	// <base64 key>" lines, or separated by ';').
	SecretKeys Secret `yaml:"secret_keys"`
	// BatchMax is the largest group-commit batch of uplinks.
	BatchMax int `yaml:"batch_max"`
	// UnavailableMaxAge is the Max-Age sent with 5.03 when storage fails.
	UnavailableMaxAge time.Duration `yaml:"unavailable_max_age"`
}

// day is 24 hours (retention periods are given in hours: 720h is 30 days).
const day = 24 * time.Hour

// Default returns the embedded defaults: everything runs on one machine
// with an SQLite file under ./data.
func Default() Config {
	return Config{
		DataDir: "data",
		Log:     LogConfig{Level: "info", Format: "text"},
		CoAP: CoAP{
			Listen:           ":5683",
			Workers:          512,
			Queue:            8192,
			ReadBuffer:       4 << 20,
			MaxBody:          64 << 10,
			BlockSize:        1024,
			DedupEntries:     1 << 18,
			ExchangeLifetime: 247 * time.Second,
			NonLifetime:      145 * time.Second,
			SymmetricListen:  ":5682",
			ReplayWindow:     1024,
			ReplaySessions:   100000,
			BlockPeerBudget:  1 << 20,
			BlockBudget:      32 << 20,
			BlockTransfers:   4096,
			SymmetricOnPlain: true,
		},
		DTLS: DTLS{
			Listen:           ":5684",
			ConnectionID:     true,
			MaxSessions:      100000,
			MaxHandshakes:    1024,
			HandshakeRate:    20,
			HandshakeTimeout: 30 * time.Second,
			IdleTimeout:      time.Hour,
			KeepSessions:     true,
		},
		Auth: Auth{
			TokenTTL:           7 * 24 * time.Hour,
			OnlineLifetime:     5 * time.Minute,
			DeviceCacheTTL:     10 * time.Second,
			DeviceCacheEntries: 1 << 18,
			DialectEIV:         DefaultDialectEIV,
		},
		API:     API{Listen: ":8080"},
		Store:   Store{Driver: "sqlite", BatchMax: 512, UnavailableMaxAge: 30 * time.Second},
		Cluster: Cluster{LeaseRetry: time.Second, DTLSSessions: true, DTLSSeqReserve: 1024, DTLSBucket: "coapgate_dtls_sessions"},
		Commands: Commands{
			Push: true, PushTimeout: 2 * time.Second, PushRetransmit: 4,
			DefaultTTL: 24 * time.Hour, MaxTTL: 7 * 24 * time.Hour,
		},
		Forward: Forward{BackoffBase: time.Second, BackoffMax: time.Minute, ShutdownTimeout: 5 * time.Second},
		Retention: Retention{
			Messages: 30 * day, Points: 30 * day, Rollups1m: 30 * day, Rollups1h: 0,
			Events: 90 * day, Commands: 30 * day, DeadLetters: 30 * day,
			Interval: 10 * time.Minute, BatchSize: 5000, BatchPause: 10 * time.Millisecond,
		},
	}
}

// Validate returns every problem found, joined.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("config: "+format, a...)) }
	if c.DataDir == "" {
		bad("data_dir must be set")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format %q: want text or json", c.Log.Format)
	}
	for name, addr := range map[string]string{"coap.listen": c.CoAP.Listen, "api.listen": c.API.Listen, "coap.symmetric_listen": c.CoAP.SymmetricListen, "dtls.listen": c.DTLS.Listen} {
		if addr == "" && (name == "coap.symmetric_listen" || name == "dtls.listen") {
			continue // disabled
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("%s %q: %v", name, addr, err)
		}
	}
	if c.CoAP.ReplayWindow < 1 || c.CoAP.ReplayWindow > 65536 {
		bad("coap.replay_window %d: want 1..65536", c.CoAP.ReplayWindow)
	}
	if c.CoAP.ReplaySessions < 16 {
		bad("coap.replay_sessions must be >= 16")
	}
	if _, err := c.Auth.SignEIV(); err != nil {
		bad("%v", err)
	}
	if c.CoAP.Workers < 1 {
		bad("coap.workers must be >= 1")
	}
	if c.CoAP.Queue < 1 {
		bad("coap.queue must be >= 1")
	}
	if c.CoAP.MaxBody < 16 {
		bad("coap.max_body must be >= 16")
	}
	if b := c.CoAP.BlockSize; b < 16 || b > 1024 || b&(b-1) != 0 {
		bad("coap.block_size %d: want a power of two in 16..1024", b)
	}
	if c.CoAP.BlockPeerBudget < c.CoAP.MaxBody || c.CoAP.BlockBudget < c.CoAP.BlockPeerBudget || c.CoAP.BlockTransfers < 1 {
		bad("coap.block_peer_budget must be >= coap.max_body, coap.block_budget >= coap.block_peer_budget, coap.block_transfers >= 1")
	}
	if c.CoAP.DedupEntries < 1024 {
		bad("coap.dedup_entries must be >= 1024")
	}
	if c.CoAP.ExchangeLifetime <= 0 || c.CoAP.NonLifetime <= 0 {
		bad("coap.exchange_lifetime and coap.non_lifetime must be > 0")
	}
	if (c.DTLS.CertFile == "") != (c.DTLS.KeyFile == "") {
		bad("dtls.cert_file and dtls.key_file must be set together")
	}
	if c.DTLS.MaxSessions < 1 || c.DTLS.MaxHandshakes < 1 {
		bad("dtls.max_sessions and dtls.max_handshakes must be >= 1")
	}
	if c.DTLS.MaxHandshakesPerAddress < 0 {
		bad("dtls.max_handshakes_per_address must be >= 0 (0: an eighth of dtls.max_handshakes)")
	}
	if c.DTLS.HandshakeRate < 0 {
		bad("dtls.handshake_rate must be >= 0 (0: unlimited)")
	}
	if c.DTLS.HandshakeTimeout < time.Second || c.DTLS.IdleTimeout < time.Second {
		bad("dtls.handshake_timeout and dtls.idle_timeout must be >= 1s")
	}
	if _, err := c.DTLS.SuiteIDs(); err != nil {
		bad("%v", err)
	}
	if c.Auth.TokenTTL < time.Minute {
		bad("auth.token_ttl must be >= 1m")
	}
	if c.Auth.TokenMaxAge != 0 && c.Auth.TokenMaxAge < c.Auth.TokenTTL {
		bad("auth.token_max_age must be 0 (no cap) or >= auth.token_ttl")
	}
	if c.Auth.OnlineLifetime < time.Second {
		bad("auth.online_lifetime must be >= 1s")
	}
	if c.Auth.DeviceCacheTTL < 0 {
		bad("auth.device_cache_ttl must be >= 0")
	}
	if c.Auth.DeviceCacheEntries < 1 {
		bad("auth.device_cache_entries must be >= 1")
	}
	switch c.Store.Driver {
	case "sqlite":
	case "postgres":
		if c.Store.PostgresURL == "" {
			bad("store.postgres_url must be set for store.driver postgres")
		}
	default:
		bad("store.driver %q: want sqlite or postgres", c.Store.Driver)
	}
	if c.Store.BatchMax < 1 {
		bad("store.batch_max must be >= 1")
	}
	if c.Cluster.LeaseRetry < 10*time.Millisecond {
		bad("cluster.lease_retry must be >= 10ms")
	}
	if c.Cluster.DTLSSeqReserve < 2 || c.Cluster.DTLSSeqReserve > 1<<30 {
		bad("cluster.dtls_seq_reserve must be in 2..2^30")
	}
	if !validBucket(c.Cluster.DTLSBucket) {
		bad("cluster.dtls_bucket %q: want letters, digits, '-' and '_'", c.Cluster.DTLSBucket)
	}
	if c.Store.UnavailableMaxAge < time.Second {
		bad("store.unavailable_max_age must be >= 1s")
	}
	if c.Commands.PushTimeout < 10*time.Millisecond || c.Commands.PushRetransmit < 1 || c.Commands.PushRetransmit > 20 {
		bad("commands.push_timeout must be >= 10ms and commands.push_retransmit in 1..20")
	}
	if c.Commands.DefaultTTL < time.Second || c.Commands.MaxTTL < c.Commands.DefaultTTL {
		bad("commands.default_ttl must be >= 1s and commands.max_ttl >= commands.default_ttl")
	}
	if c.Forward.BackoffBase < time.Millisecond || c.Forward.BackoffMax < c.Forward.BackoffBase {
		bad("forward.backoff_base must be >= 1ms and forward.backoff_max >= forward.backoff_base")
	}
	if c.Forward.ShutdownTimeout < 0 {
		bad("forward.shutdown_timeout must be >= 0")
	}
	r := c.Retention
	for name, d := range map[string]time.Duration{"messages": r.Messages, "points": r.Points, "rollups_1m": r.Rollups1m,
		"rollups_1h": r.Rollups1h, "events": r.Events, "commands": r.Commands, "dead_letters": r.DeadLetters} {
		if d != 0 && d < time.Minute {
			bad("retention.%s must be 0 (keep forever) or >= 1m", name)
		}
	}
	if r.Interval < time.Second || r.BatchSize < 1 || r.BatchSize > 5000 || r.BatchPause < 0 {
		bad("retention.interval must be >= 1s, retention.batch_size in 1..5000 and retention.batch_pause >= 0")
	}
	return errors.Join(errs...)
}

// validBucket: a JetStream bucket name.
func validBucket(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
