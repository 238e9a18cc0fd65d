package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable the gateway reads.
const EnvPrefix = "COAPGATE_"

// Field is one settable leaf of Config.
type Field struct {
	Key  string // dotted YAML path, e.g. "coap.listen"
	Env  string // e.g. COAPGATE_COAP_LISTEN
	Flag string // e.g. coap.listen, data-dir
	v    reflect.Value
}

// Fields lists every leaf of c, in declaration order, addressable for Set.
func Fields(c *Config) []Field {
	var out []Field
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := range t.NumField() {
			sf := t.Field(i)
			name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			key := prefix + name
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Duration(0)) {
				walk(fv, key+".")
				continue
			}
			out = append(out, Field{
				Key:  key,
				Env:  EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_")),
				Flag: strings.ReplaceAll(key, "_", "-"),
				v:    fv,
			})
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

// Set parses s into the field.
func (f Field) Set(s string) error {
	switch f.v.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Key, err)
		}
		f.v.SetInt(int64(d))
		return nil
	}
	switch f.v.Kind() {
	case reflect.String:
		f.v.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Key, err)
		}
		f.v.SetInt(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Key, err)
		}
		f.v.SetBool(b)
	default:
		return fmt.Errorf("%s: unsupported kind %s", f.Key, f.v.Kind())
	}
	return nil
}

// String returns the field's current value as it would be written on a
// command line (secrets redacted).
func (f Field) String() string {
	if s, ok := f.v.Interface().(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprint(f.v.Interface())
}

// Help describes each setting, for --help and the docs.
var Help = map[string]string{
	"data_dir":                        "directory for the embedded database, the token key and generated certificates",
	"log.level":                       "log level: debug, info, warn or error",
	"log.format":                      "log format: text or json",
	"coap.listen":                     "UDP address of the plain CoAP listener (token auth)",
	"coap.workers":                    "requests handled concurrently",
	"coap.queue":                      "datagrams waiting for a worker before CON requests get 5.03",
	"coap.read_buffer":                "socket receive buffer to request (SO_RCVBUF), bytes; capped by net.core.rmem_max",
	"coap.max_body":                   "largest request body (after Block1 reassembly); larger gets 4.13 with Size1",
	"coap.block_size":                 "Block2 size for large responses (power of two, 16..1024)",
	"coap.dedup_entries":              "exchanges kept for duplicate detection and response replay",
	"coap.exchange_lifetime":          "how long a CON's response is replayed to duplicates (RFC 7252 EXCHANGE_LIFETIME)",
	"coap.non_lifetime":               "how long a NON's Message ID is remembered (RFC 7252 NON_LIFETIME)",
	"coap.symmetric_listen":           "UDP address of the symmetric-encryption listener (token dialect, AES payloads); empty disables it",
	"coap.replay_window":              "sequence numbers a session remembers below its highest (option 2089); older ones are replays (option 2101's N must strictly increase)",
	"coap.replay_sessions":            "sessions whose replay state a node holds in memory (LRU); an evicted one is rebuilt from the store",
	"coap.symmetric_on_plain":         "the plain listener also takes the symmetric mode: an /auth carrying seq gets a session, uplinks with option 2089 are decrypted",
	"coap.block_peer_budget":          "bytes one peer (source address or DTLS session) may reserve for Block1 bodies in progress; a transfer reserves its Size1 or max_body, and one that does not fit gets 5.03 with Max-Age",
	"coap.block_budget":               "bytes all Block1 bodies in progress of a listener may reserve together",
	"coap.block_transfers":            "Block1 transfers in progress per listener",
	"dtls.listen":                     "UDP address of the CoAP-over-DTLS listener (PSK identities, certificates); empty disables it",
	"dtls.cert_file":                  "PEM server certificate for certificate clients (default: a self-signed ECDSA development certificate generated into data_dir)",
	"dtls.key_file":                   "PEM private key of dtls.cert_file",
	"dtls.connection_id":              "negotiate RFC 9146 Connection IDs so a session survives a NAT rebinding",
	"dtls.max_sessions":               "established DTLS sessions plus handshakes in flight; beyond it new handshakes are dropped",
	"dtls.max_handshakes":             "DTLS handshakes in flight (a ClientHello holds no state before it echoes its cookie); beyond it new ClientHellos are dropped; from half of it the node is under pressure and limits each source address",
	"dtls.handshake_rate":             "new DTLS handshakes per second per source IP address (also the burst), applied only while half of dtls.max_handshakes are in flight; 0 is unlimited",
	"dtls.max_handshakes_per_address": "DTLS handshakes in flight from one source IP address while half of dtls.max_handshakes are in flight; 0 is an eighth of dtls.max_handshakes",
	"dtls.handshake_timeout":          "longest DTLS handshake",
	"dtls.idle_timeout":               "idle limit of certificate sessions (PSK sessions use their identity's lifetime)",
	"dtls.suites":                     "cipher suites offered, comma-separated IANA names in preference order (e.g. TLS_PSK_WITH_AES_128_CCM_8,TLS_RSA_WITH_AES_128_CBC_SHA256); empty: the certificate's suites, then the dialect's two PSK suites",
	"dtls.keep_sessions":              "keep established DTLS sessions in data_dir (dtls-sessions.db, sealed with the store's secret key) so devices continue after a restart of this node, graceful or a crash, without a new handshake; a session is kept once it has lasted 5 s",
	"cluster.nats_url":                "NATS URL that carries device changes (revocations, secret rotations, disable, delete) to every node within a second; empty: this node only",
	"cluster.dtls_sessions":           "with cluster.nats_url: share DTLS sessions between nodes, so devices continue on another node without a new handshake when their node dies or (with a connection ID) their address changes",
	"cluster.dtls_address_sessions":   "also share DTLS sessions without a connection ID, by device address: only behind a balancer that preserves the client address (IPVS, cloud network load balancers), never behind nginx",
	"cluster.dtls_seq_reserve":        "record sequence numbers a node reserves at a time for a shared DTLS session, or one kept across restarts (dtls.keep_sessions); a new reservation is stored (in NATS, or in data_dir) when half is used",
	"cluster.dtls_bucket":             "NATS JetStream key-value bucket holding the shared DTLS sessions (sealed with the store's secret key)",
	"cluster.node":                    "name of this node in logs and PostgreSQL sessions (default: the host name)",
	"cluster.lease_retry":             "with store.driver postgres: how often a standby node tries to take over the point projector and forwarding actions, and a holder checks its lease connection",
	"auth.token_ttl":                  "token lifetime, sliding: a token stays valid while its device (a session token: its session) had an accepted uplink within it",
	"auth.token_max_age":              "absolute cap on a token's validity from its issue time, whatever the activity; 0 is none",
	"auth.token_key":                  "hex token signing key shared by all nodes (default: generated into data_dir/token.key)",
	"auth.online_lifetime":            "how long a token device stays online after its last message (unless its product sets one)",
	"auth.device_cache_ttl":           "how stale a cached device record may be (other nodes' changes show within this)",
	"auth.device_cache_entries":       "known devices each listener (5683, 5682, 5684) caches (LRU of device and product records); a device not cached costs registry reads on its next request",
	"auth.dialect_e_iv":               "AES-CBC IV of option 2101, the PSK dialect's sign mode (not published): 16 ASCII characters or 32 hex digits",
	"api.listen":                      "TCP address of the management HTTP API",
	"api.pprof_listen":                "TCP address serving /debug/pprof (no authentication: bind to loopback); empty disables it",
	"store.driver":                    "storage driver: sqlite (embedded) or postgres (store.postgres_url)",
	"store.sqlite_path":               "SQLite database file (default data_dir/coapgate.db)",
	"store.secret_keys":               "key file text instead of store.secret_key_file (secret)",
	"store.secret_key_file":           "keys encrypting stored secrets (default data_dir/secret.key, created 0600)",
	"store.postgres_url":              "PostgreSQL connection URL for store.driver postgres (secret: never logged)",
	"store.batch_max":                 "largest group commit of uplinks",
	"store.unavailable_max_age":       "Max-Age sent with 5.03 while storage is unavailable",
	"commands.push":                   "push a new downlink command at once to a device with a live session (DTLS, or plain UDP seen within its lifetime); others get option 2100 on their next uplink",
	"commands.push_timeout":           "ACK_TIMEOUT of a command push (RFC 7252), doubled per retransmission",
	"commands.push_retransmit":        "MAX_RETRANSMIT of a command push; unanswered, the command stays pending",
	"commands.default_ttl":            "time to live of a command created without a ttl",
	"commands.max_ttl":                "longest ttl a command may ask for",
	"forward.backoff_base":            "wait after a forwarding action's first failed attempt; doubles per attempt, with jitter",
	"forward.backoff_max":             "longest wait between a forwarding action's attempts",
	"forward.shutdown_timeout":        "how long in-flight forwarding deliveries may finish at shutdown before they are aborted",
	"retention.messages":              "how long message log entries are kept (0: forever); products may override it",
	"retention.points":                "how long point samples are kept (0: forever; latest values stay); products may override it",
	"retention.rollups_1m":            "how long 1-minute point rollups are kept (0: forever; never shorter than the samples)",
	"retention.rollups_1h":            "how long 1-hour point rollups are kept (0: forever; never shorter than the 1-minute ones)",
	"retention.events":                "how long device online/offline events are kept (0: forever); products may override it",
	"retention.commands":              "how long finished downlink commands are kept (0: forever); products may override it",
	"retention.dead_letters":          "how long forwarding dead letters are kept (0: forever)",
	"retention.interval":              "wait between two retention runs",
	"retention.batch_size":            "rows deleted per retention transaction (1..5000)",
	"retention.batch_pause":           "least wait between two retention batches (the worker also waits as long as the last batch took), so that ingest commits go first",
}

// Overrides collects flag values; they are applied last.
type Overrides struct {
	set map[string]string // key -> raw value
}

// RegisterFlags adds one flag per Config field to fs (e.g. --coap.listen,
// --data-dir) and returns where their values are collected.
func RegisterFlags(fs *flag.FlagSet) *Overrides {
	ov := &Overrides{set: map[string]string{}}
	def := Default()
	for _, f := range Fields(&def) {
		key := f.Key
		usage := fmt.Sprintf("%s (env %s)", Help[key], f.Env)
		fs.Func(f.Flag, usage+defaultNote(f), func(s string) error {
			ov.set[key] = s
			return nil
		})
	}
	return ov
}

func defaultNote(f Field) string {
	s := f.String()
	if s == "" {
		return ""
	}
	return " (default " + s + ")"
}

// Removed are settings of earlier versions that no longer mean anything:
// Load accepts them in the file and the environment with a warning
// (Config.Warnings), so that an upgraded node starts on its old
// configuration. dtls.engine is special: native (the only engine) is
// accepted with a warning, any other value refused.
var Removed = map[string]string{
	"dtls.engine":                 "the native engine is the only DTLS engine",
	"dtls.hibernate_after":        "the DTLS engine keeps an idle session in about 1 KB without hibernating it",
	"dtls.cookie_timeout":         "the DTLS engine's cookie is stateless: a ClientHello holds no state before it echoes its cookie",
	"dtls.handshake_idle_timeout": "a DTLS handshake whose peer goes silent ends after the retransmissions of the server's flight or dtls.handshake_timeout",
}

// removed checks the value of a removed setting and returns its warning.
func removed(key, value, where string) (string, error) {
	if key == "dtls.engine" && value != "native" {
		return "", fmt.Errorf("config: %s: dtls.engine %q: the pion-based DTLS engine was removed; the native engine is the only one (delete dtls.engine)", where, value)
	}
	return fmt.Sprintf("%s: %s is obsolete and ignored (%s); delete it", where, key, Removed[key]), nil
}

// dropRemoved deletes the removed settings from a YAML document, returning
// the document to decode and the warnings.
func dropRemoved(b []byte, path string) ([]byte, []string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return b, nil, nil // the strict decode reports it
	}
	var warn []string
	top := doc.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		section := top.Content[i].Value
		m := top.Content[i+1]
		if m.Kind != yaml.MappingNode {
			continue
		}
		kept := m.Content[:0:0]
		for j := 0; j+1 < len(m.Content); j += 2 {
			key := section + "." + m.Content[j].Value
			if _, ok := Removed[key]; !ok {
				kept = append(kept, m.Content[j], m.Content[j+1])
				continue
			}
			w, err := removed(key, m.Content[j+1].Value, path)
			if err != nil {
				return nil, nil, err
			}
			warn = append(warn, w)
		}
		m.Content = kept
	}
	if len(warn) == 0 {
		return b, nil, nil
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return out, warn, nil
}

// Load builds the configuration: Default(), then the YAML file at path (if
// path is not empty), then environment variables (lookup is os.LookupEnv in
// production), then flag overrides. The result is validated.
func Load(path string, lookup func(string) (string, bool), ov *Overrides) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		b, c.Warnings, err = dropRemoved(b, path)
		if err != nil {
			return Config{}, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("config: %s: %w", path, err)
		}
	}
	for key := range Removed {
		if lookup == nil {
			break
		}
		env := EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		if s, ok := lookup(env); ok {
			w, err := removed(key, s, "env "+env)
			if err != nil {
				return Config{}, err
			}
			c.Warnings = append(c.Warnings, w)
		}
	}
	fields := Fields(&c)
	for _, f := range fields {
		if lookup == nil {
			break
		}
		if s, ok := lookup(f.Env); ok {
			if err := f.Set(s); err != nil {
				return Config{}, fmt.Errorf("config: env %s: %w", f.Env, err)
			}
		}
	}
	if ov != nil {
		for _, f := range fields {
			if s, ok := ov.set[f.Key]; ok {
				if err := f.Set(s); err != nil {
					return Config{}, fmt.Errorf("config: flag --%s: %w", f.Flag, err)
				}
			}
		}
	}
	return c, c.Validate()
}

// YAML renders c as YAML for --print-config; secrets are redacted.
func (c Config) YAML() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// NormalizeFlagArgs lets every setting's flag be spelled with underscores
// as in YAML (--coap.max_body) as well as with hyphens (--coap.max-body):
// it rewrites the underscore spelling of a known setting to the hyphen one
// the flag set registers. Arguments after "--" and values are left alone.
func NormalizeFlagArgs(args []string) []string {
	def := Default()
	alias := map[string]string{}
	for _, f := range Fields(&def) {
		if f.Key != f.Flag {
			alias[f.Key] = f.Flag
		}
	}
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		dashes := "-"
		if strings.HasPrefix(a, "--") {
			dashes = "--"
		}
		name, value, hasValue := strings.Cut(a[len(dashes):], "=")
		if fl, ok := alias[name]; ok {
			out[i] = dashes + fl
			if hasValue {
				out[i] += "=" + value
			}
		}
	}
	return out
}

// OtherEnv lists the COAPGATE_* variables that are not settings but are
// read by the command line tools (and tests); UnknownEnv does not report
// them.
var OtherEnv = []string{EnvPrefix + "CONFIG", EnvPrefix + "API_URL", EnvPrefix + "API_KEY"}

// UnknownEnv returns the names of COAPGATE_* variables in environ (as
// os.Environ returns it) that name no setting: most likely typos, which
// would otherwise be ignored silently. COAPGATE_TEST_* (the test suites'
// service addresses) and OtherEnv are not reported.
func UnknownEnv(environ []string) []string {
	def := Default()
	known := map[string]bool{}
	for _, f := range Fields(&def) {
		known[f.Env] = true
	}
	for _, e := range OtherEnv {
		known[e] = true
	}
	for key := range Removed { // Load warns about them
		known[EnvPrefix+strings.ToUpper(strings.ReplaceAll(key, ".", "_"))] = true
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix) || known[name] || strings.HasPrefix(name, EnvPrefix+"TEST_") {
			continue
		}
		out = append(out, name)
	}
	return out
}
