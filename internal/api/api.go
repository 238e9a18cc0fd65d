// Package api serves the management HTTP API under /api/v1: products,
// devices, stored messages and API keys, as JSON over HTTP with bearer-key
// authentication (RFC 6750 §2.1). The document describing it is the
// embedded OpenAPI 3.1 file openapi.json, served at /api/v1/openapi.json.
//
// One table (errorTable in errors.go) maps domain errors to HTTP status
// codes and stable error codes; one table (routes) lists every route.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/presence"
	"github.com/coapgate/coapgate/internal/registry"
)

// Prefix is the path prefix of every API route.
const Prefix = "/api/v1"

// PresenceLookup reports a device's live status as this node sees it.
// Lookup must be safe for concurrent use; ok is false when the device has
// not been seen.
type PresenceLookup interface {
	Lookup(pk, dk string) (s presence.Status, ok bool)
}

// Options configures the handler returned by New. Registry, Messages and
// Keys are required; the rest may be left zero.
type Options struct {
	Registry registry.Store
	Messages message.Store
	Keys     apikey.Store
	// Notify wakes live streams when the message log grows; nil: they poll.
	Notify message.Notifier
	// MaxStreams bounds concurrently open live streams (GET /stream);
	// <= 0 means 64.
	MaxStreams int
	// Events lists device online/offline transitions; nil: none recorded.
	Events event.Store
	// Points answers the measure-point routes (latest, history, export);
	// nil: they answer 503 unavailable.
	Points point.Reader
	// Commands is the downlink command queue; nil answers its routes 503.
	Commands CommandService
	// Presence supplies live online status; nil means "never seen".
	Presence PresenceLookup
	// Health checks the stores (a ping); nil means always healthy.
	Health func(ctx context.Context) error
	// Rules manages forwarding rules; nil: the rule routes answer 503.
	Rules RuleService
	// Stats is the recent history of the node's counters (GET /stats);
	// nil: the route answers 503 unavailable.
	Stats StatsSource
	// Metrics, when non-nil, is served at GET /metrics without auth.
	Metrics http.Handler
	// OnDeviceChange is called after a device is created, updated, deleted,
	// or has its tokens revoked or secret rotated, and after a product is
	// created, updated or deleted (then dk is ""), so the gateway drops
	// cached state, including cached "not found" answers. It runs on the
	// request goroutine after the store write succeeded and must not block.
	OnDeviceChange func(pk, dk string)
	Logger         *slog.Logger
	// Now defaults to time.Now.
	Now     func() time.Time
	Version string
	// DefaultOnlineLifetime is the lifetime reported for a device whose
	// product has none (OnlineLifetime 0) and that this node has not seen.
	DefaultOnlineLifetime time.Duration
}

// route is one entry of the route table. Patterns use net/http ServeMux
// syntax (Go 1.22+); handlers report failures by returning an error, which
// writeError maps through errorTable.
type route struct {
	method  string
	pattern string
	handler func(w http.ResponseWriter, r *http.Request) error
	auth    bool
}

type server struct {
	o     Options
	log   *slog.Logger
	auth  *authCache
	mux   *http.ServeMux
	table []route
	// streams holds a token per open live stream (capacity MaxStreams).
	streams chan struct{}
}

// New returns the API handler. It serves /api/v1/... and, when o.Metrics is
// set, /metrics; any other path gets a JSON 404.
func New(o Options) http.Handler {
	s := newServer(o)
	for _, rt := range s.table {
		s.mux.Handle(rt.method+" "+rt.pattern, s.wrap(rt))
	}
	return s
}

func newServer(o Options) *server {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.OnDeviceChange == nil {
		o.OnDeviceChange = func(string, string) {}
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = defaultMaxStreams
	}
	s := &server{
		streams: make(chan struct{}, o.MaxStreams),
		o:       o,
		log:     o.Logger.With("component", "api"),
		auth:    newAuthCache(authCacheSize, authCacheTTL),
		mux:     http.NewServeMux(),
	}
	s.table = s.routes()
	return s
}

// routes is the route table: every route the API serves, in one place.
func (s *server) routes() []route {
	rs := []route{
		{"GET", Prefix + "/health", s.health, false},
		{"GET", Prefix + "/openapi.json", s.openAPI, false},

		{"POST", Prefix + "/products", s.createProduct, true},
		{"GET", Prefix + "/products", s.listProducts, true},
		{"GET", Prefix + "/products/{productKey}", s.getProduct, true},
		{"PATCH", Prefix + "/products/{productKey}", s.updateProduct, true},
		{"DELETE", Prefix + "/products/{productKey}", s.deleteProduct, true},

		{"POST", Prefix + "/devices", s.createDevice, true},
		{"GET", Prefix + "/devices", s.listDevices, true},
		{"GET", Prefix + "/devices/{productKey}/{deviceKey}", s.getDevice, true},
		{"PATCH", Prefix + "/devices/{productKey}/{deviceKey}", s.updateDevice, true},
		{"DELETE", Prefix + "/devices/{productKey}/{deviceKey}", s.deleteDevice, true},
		{"POST", Prefix + "/devices/{productKey}/{deviceKey}/revoke-tokens", s.revokeTokens, true},
		{"POST", Prefix + "/devices/{productKey}/{deviceKey}/rotate-secret", s.rotateSecret, true},
		{"GET", Prefix + "/devices/{productKey}/{deviceKey}/messages", s.listDeviceMessages, true},
		{"GET", Prefix + "/devices/{productKey}/{deviceKey}/events", s.listDeviceEvents, true},
		{"GET", Prefix + "/devices/{productKey}/{deviceKey}/measurepoints", s.latestPoints, true},
		{"GET", Prefix + "/devices/{productKey}/{deviceKey}/measurepoints/{point}/history", s.pointHistory, true},
		{"GET", Prefix + "/devices/{productKey}/{deviceKey}/measurepoints/export", s.exportPoints, true},
		{"POST", Prefix + "/devices/{productKey}/{deviceKey}/commands", s.createCommand, true},
		{"GET", Prefix + "/devices/{productKey}/{deviceKey}/commands", s.listCommands, true},
		{"GET", Prefix + "/devices/{productKey}/{deviceKey}/commands/{id}", s.getCommand, true},
		{"DELETE", Prefix + "/devices/{productKey}/{deviceKey}/commands/{id}", s.cancelCommand, true},

		{"GET", Prefix + "/messages", s.listMessages, true},
		{"GET", Prefix + "/stream", s.stream, true},

		{"POST", Prefix + "/rules", s.createRule, true},
		{"GET", Prefix + "/rules", s.listRules, true},
		{"GET", Prefix + "/rules/{id}", s.getRule, true},
		{"PATCH", Prefix + "/rules/{id}", s.updateRule, true},
		{"DELETE", Prefix + "/rules/{id}", s.deleteRule, true},
		{"GET", Prefix + "/rules/{id}/status", s.ruleStatus, true},
		{"GET", Prefix + "/rules/{id}/deadletters", s.listDeadLetters, true},
		{"POST", Prefix + "/rules/{id}/deadletters/replay", s.replayDeadLetters, true},
		{"DELETE", Prefix + "/rules/{id}/deadletters/{dlid}", s.deleteDeadLetter, true},

		{"POST", Prefix + "/apikeys", s.createAPIKey, true},
		{"GET", Prefix + "/apikeys", s.listAPIKeys, true},
		{"DELETE", Prefix + "/apikeys/{id}", s.deleteAPIKey, true},

		{"GET", Prefix + "/stats", s.getStats, true},
	}
	if s.o.Metrics != nil {
		rs = append(rs, route{"GET", "/metrics", s.metrics, false})
	}
	return rs
}

// ServeHTTP answers requests that match no route with a JSON 404 (or 405
// with Allow) instead of ServeMux's plain-text pages.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	// No route: let the mux decide between 404 and 405 (it sets Allow),
	// then answer in JSON.
	sw := &statusOnly{header: make(http.Header)}
	h.ServeHTTP(sw, r)
	switch sw.status {
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", sw.header.Get("Allow"))
		writeJSONError(w, http.StatusMethodNotAllowed, codeMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path)
	case http.StatusNotFound, 0:
		writeJSONError(w, http.StatusNotFound, codeNotFound, "no route for "+r.URL.Path)
	default:
		// Redirects (non-canonical paths) and anything else: pass through.
		s.mux.ServeHTTP(w, r)
	}
}

// statusOnly records the status and headers a handler writes and drops the body.
type statusOnly struct {
	header http.Header
	status int
}

func (w *statusOnly) Header() http.Header { return w.header }
func (w *statusOnly) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *statusOnly) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return len(p), nil
}

// wrap turns a route into an http.Handler: authentication when the route
// asks for it, a no-store cache policy (responses may carry secrets), and
// error mapping.
func (s *server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if rt.auth {
			keyID, err := s.authenticate(r)
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), keyIDCtx{}, keyID))
		}
		if err := rt.handler(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

func (s *server) health(w http.ResponseWriter, r *http.Request) error {
	if s.o.Health != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.o.Health(ctx); err != nil {
			return &unavailableError{err: err}
		}
	}
	writeJSON(w, http.StatusOK, Health{Status: "ok", Version: s.o.Version})
	return nil
}

// Health is the body of a successful health check.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
}

func (s *server) metrics(w http.ResponseWriter, r *http.Request) error {
	s.o.Metrics.ServeHTTP(w, r)
	return nil
}

func (s *server) now() time.Time { return s.o.Now().UTC() }
