package native

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/dtlsx/engine"
	"github.com/coapgate/coapgate/internal/ratelog"
	"github.com/coapgate/coapgate/internal/secretbox"
	"github.com/prometheus/client_golang/prometheus"
)

// Replication shares established sessions with the other nodes of a
// cluster, so that a session survives the loss of its node and, with a
// connection ID, a change of the peer's address that sends it to another
// node (docs/architecture.md, "DTLS sessions across nodes").
//
// Each replicated session has one record in Store: the exported session
// sealed with Keys, its owner (the one node that may send on it) and the
// end of the owner's write-sequence reservation. The owner never seals
// with a sequence number at or above the stored end; a node taking the
// session over first proves the peer holds it (a record that authenticates
// under the stored keys), then moves the record to itself by
// compare-and-set, and sends from the old end on.
type Replication struct {
	Store SessionStore
	// Keys seal the stored sessions (the cluster's secret keys).
	Keys *secretbox.Keyring
	// Node names this node in the records (unique in the cluster).
	Node string
	// Reserve is the number of write sequence numbers reserved at a time
	// [1024]; a new reservation is made when half is used.
	Reserve uint64
	// ByAddress also replicates sessions without a connection ID, by the
	// peer address the node sees; only for balancers that preserve the
	// client's address (behind a proxy such as nginx the address is the
	// proxy's and means nothing to another node).
	ByAddress bool
	// Lookups bounds the lookups of unknown sessions queued or running
	// [64]; more are dropped (and counted).
	Lookups int
	// Ready reports whether Store is reachable now; while it is not, new
	// sessions stay local (nil: always ready).
	Ready func() bool
	// Workers is the number of concurrent store writes [2]; a store that
	// commits concurrent writes together (sqlitekv) wants more.
	Workers int
	// FirstWriteAfter delays a new session's first write: a session that
	// ends sooner (a device that handshakes, reports and closes) costs the
	// store nothing. Safe whatever its length, since a session sends only
	// within its first reservation until its record is stored. 0: at once.
	FirstWriteAfter time.Duration
}

// SessionStore is the shared store of replicated sessions, with
// compare-and-set on a key's revision.
type SessionStore interface {
	// Get returns the value and revision of key; ErrNotFound if none.
	Get(ctx context.Context, key string) ([]byte, uint64, error)
	// Put stores val under key unconditionally.
	Put(ctx context.Context, key string, val []byte) (uint64, error)
	// Update stores val if key is still at revision rev; ErrConflict if
	// not (ErrNotFound: it no longer exists).
	Update(ctx context.Context, key string, val []byte, rev uint64) (uint64, error)
	// Delete removes key if it is still at revision rev.
	Delete(ctx context.Context, key string, rev uint64) error
	// Watch calls fn with every change made from now on (val nil: the
	// key was deleted) until ctx ends.
	Watch(ctx context.Context, fn func(key string, val []byte, rev uint64)) error
}

// Errors of a SessionStore.
var (
	ErrNotFound = errors.New("session store: no such key")
	ErrConflict = errors.New("session store: revision changed")
)

// Replication events (the event label of coapgate_dtls_replication_total).
const (
	evExported      = "exported"       // a new session stored
	evExtended      = "extended"       // a new write-sequence reservation
	evImported      = "imported"       // a session taken over from another node
	evTakenOver     = "taken_over"     // a session another node took over: dropped here
	evDeleted       = "deleted"        // a record removed at the session's end
	evLocalOnly     = "local_only"     // a session not replicated (store unreachable)
	evLookups       = "lookups"        // lookups of unknown sessions started
	evLookupMisses  = "lookup_misses"  // lookups that found nothing
	evLookupsDenied = "lookup_refused" // records that did not authenticate under the stored session
	evLookupsDrop   = "lookup_dropped" // lookups not made: limit reached or key known missing
	evConflicts     = "cas_conflicts"  // compare-and-set lost to another node
	evFailures      = "failures"       // store errors (retried)
	evStale         = "stale"          // sessions not taken over: device gone, disabled or its key changed
)

// negativeTTL: how long a key found missing (or a record refused) is not
// looked up again.
const (
	negativeTTL  = 2 * time.Second
	negativeMax  = 4096
	storeTimeout = 5 * time.Second
	replWorkers  = 2
	replLookups  = 4
)

// repl runs the replication of a Server's sessions.
type repl struct {
	srv    *Server
	cfg    Replication
	events *prometheus.CounterVec

	mu      sync.Mutex
	owned   map[*engine.Session]*owned // found by key through the engine (sessionOf): no map by key
	neg     map[rkey]time.Time         // keys not to look up before the time
	busy    map[rkey]struct{}          // keys being looked up
	look    chan lookupJob
	jobs    chan replJob
	stopped atomic.Bool      // run returned: first writes are not retried
	warn    *ratelog.Limiter // store failures, one per session: logged at a bounded rate
}

// owned is a replicated session this node owns. One per session, so it
// is kept small: the key in compact form, the PSK hash inline.
type owned struct {
	key    rkey
	es     *engine.Session
	rev    uint64   // revision of our record; 0: not stored yet
	limit  uint64   // end of the reservation in force locally (and stored, once rev > 0)
	psk    [32]byte // SHA-256 of the session's PSK, when pskOf is pskSet
	pskOf  uint8    // pskUnknown, pskCert or pskSet
	queued bool     // a job for it is queued
}

// What owned.psk holds.
const (
	pskUnknown = iota // not known yet (looked up before the first write)
	pskCert           // a certificate session: no PSK
	pskSet
)

// pskHash returns the stored form of the PSK hash (empty: certificate
// session), nil when unknown.
func (o *owned) pskHash() []byte {
	switch o.pskOf {
	case pskCert:
		return []byte{}
	case pskSet:
		return o.psk[:]
	}
	return nil
}

// setPSK records the stored form of a PSK hash (empty: certificate).
func (o *owned) setPSK(h []byte) {
	if len(h) == 0 {
		o.pskOf = pskCert
		return
	}
	copy(o.psk[:], h)
	o.pskOf = pskSet
}

// rkey is a store key in compact form, a map key without an allocation:
// [0] the length of what follows, then the kind ('c': connection ID, 'a':
// binary address) and the bytes the store key has in hex.
type rkey [20]byte

// makeKey returns the key of kind ('c' or 'a') for b; ok false if b is
// too long (an address with a zone).
func makeKey(kind byte, b []byte) (k rkey, ok bool) {
	if len(b) > len(k)-2 {
		return k, false
	}
	k[0], k[1] = byte(1+len(b)), kind
	copy(k[2:], b)
	return k, true
}

// compact returns the compact form of a store key ("c.<hex>" or
// "a.<hex>"); ok false if it is not one this node writes.
func compact(key string) (k rkey, ok bool) {
	if len(key) < 4 || len(key)%2 != 0 || (len(key)-2)/2 > len(k)-2 || key[1] != '.' || (key[0] != 'c' && key[0] != 'a') {
		return k, false
	}
	n, err := hex.Decode(k[2:], []byte(key[2:]))
	if err != nil {
		return rkey{}, false
	}
	k[0], k[1] = byte(1+n), key[0]
	return k, true
}

// sessionOf returns this engine's session under key k (nil: none). It
// takes the engine's lock: never call it holding r.mu.
func (r *repl) sessionOf(k rkey) *engine.Session {
	b := k[2 : 1+k[0]]
	if k[1] == 'c' {
		return r.srv.e.SessionByCID(b)
	}
	var a netip.AddrPort
	if a.UnmarshalBinary(b) != nil {
		return nil
	}
	// The engine keys address sessions by the address as received (IPv4
	// possibly mapped); the store key has it unmapped.
	if s := r.srv.e.Session(a); s != nil {
		return s
	}
	if a.Addr().Is4() {
		return r.srv.e.Session(netip.AddrPortFrom(netip.AddrFrom16(a.Addr().As16()), a.Port()))
	}
	return nil
}

// String returns the store key.
func (k rkey) String() string { return string(k[1]) + "." + hex.EncodeToString(k[2:1+k[0]]) }

type replJob struct {
	o      *owned
	delete bool
	rev    uint64 // of a delete
}

type lookupJob struct {
	key  rkey
	addr netip.AddrPort
	rec  []byte
}

func newRepl(srv *Server, cfg Replication) (*repl, error) {
	if cfg.Store == nil || cfg.Keys == nil || cfg.Node == "" {
		return nil, errors.New("dtls replication: store, keys and node name are required")
	}
	if cfg.Reserve < 2 {
		cfg.Reserve = 1024
	}
	if cfg.Lookups <= 0 {
		cfg.Lookups = 64
	}
	if cfg.Workers <= 0 {
		cfg.Workers = replWorkers
	}
	if len(cfg.Node) > 200 {
		cfg.Node = cfg.Node[:200] // one length byte in the record
	}
	r := &repl{
		srv: srv, cfg: cfg,
		owned: map[*engine.Session]*owned{},
		neg:   map[rkey]time.Time{}, busy: map[rkey]struct{}{},
		look: make(chan lookupJob, cfg.Lookups), jobs: make(chan replJob, 4096),
		warn: ratelog.New(srv.log, ratelog.Config{}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_dtls_replication_total", Help: "DTLS session replication between cluster nodes, by event.",
		}, []string{"event"}),
	}
	for _, ev := range []string{evExported, evExtended, evImported, evTakenOver, evDeleted, evLocalOnly, evStale,
		evLookups, evLookupMisses, evLookupsDenied, evLookupsDrop, evConflicts, evFailures} {
		r.events.WithLabelValues(ev)
	}
	return r, nil
}

func (r *repl) count(ev string) { r.events.WithLabelValues(ev).Inc() }

// run serves the workers and the watch until ctx ends.
func (r *repl) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() { r.jobWorker(ctx) })
	}
	for range replLookups {
		wg.Go(func() { r.lookupWorker(ctx) })
	}
	wg.Go(func() { r.watch(ctx) })
	wg.Wait()
	r.stopped.Store(true)
}

// keyOf returns the store key of a session: by connection ID, else (with
// ByAddress) by peer address; ok false if it is not replicated.
func (r *repl) keyOf(cid []byte, addr netip.AddrPort) (k rkey, ok bool) {
	if len(cid) > 0 {
		return makeKey('c', cid)
	}
	if !r.cfg.ByAddress {
		return k, false
	}
	b, _ := netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()).MarshalBinary()
	return makeKey('a', b)
}

// record is the stored form of a session.
type record struct {
	owner string
	limit uint64 // no node may send with a sequence number at or above it but its owner, after moving it
	psk   []byte // SHA-256 of the PSK the session was keyed with (empty: certificate session)
	blob  []byte // engine export
	// written is when the record was sealed (the writer's wall clock, Unix
	// ns; 0 in records of version 2): a node taking the session over
	// starts engine.RollbackMargin(now - written) beyond limit, so that a
	// store that lost later writes cannot make it repeat a sequence number.
	written int64
}

const recordVersion = 3

func aad(key string) string { return "dtls.session:" + key }

func (r *repl) seal(key string, v record) []byte {
	b := make([]byte, 0, 19+len(v.owner)+len(v.psk)+len(v.blob))
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(time.Now().UnixNano()))
	b = binary.BigEndian.AppendUint64(b, v.limit)
	b = append(b, byte(len(v.owner)))
	b = append(b, v.owner...)
	b = append(b, byte(len(v.psk)))
	b = append(b, v.psk...)
	b = append(b, v.blob...)
	return []byte(r.cfg.Keys.Seal(b, aad(key)))
}

func (r *repl) open(key string, val []byte) (record, error) {
	b, err := r.cfg.Keys.Open(string(val), aad(key))
	if err != nil {
		return record{}, err
	}
	bad := errors.New("dtls replication: malformed record")
	var v record
	switch {
	case len(b) > 0 && b[0] == 2: // before the write time was stored
		b = b[1:]
	case len(b) >= 9 && b[0] == recordVersion:
		v.written = int64(binary.BigEndian.Uint64(b[1:9]))
		b = b[9:]
	default:
		return record{}, bad
	}
	if len(b) < 9 || len(b) < 10+int(b[8]) {
		return record{}, bad
	}
	n := int(b[8])
	v.limit, v.owner = binary.BigEndian.Uint64(b[:8]), string(b[9:9+n])
	b = b[9+n:]
	if len(b) < 1+int(b[0]) {
		return record{}, bad
	}
	v.psk, v.blob = b[1:1+int(b[0])], b[1+int(b[0]):]
	return v, nil
}

// pskHash returns the SHA-256 of the PSK identity's key as the registry
// has it now, and the key (nil for a certificate session: no identity).
func (r *repl) pskHash(ctx context.Context, identity []byte) (hash, key []byte, err error) {
	if identity == nil {
		return nil, nil, nil
	}
	id, err := dtlspsk.Parse(identity)
	if err != nil {
		return nil, nil, err
	}
	key, err = r.srv.cfg.LookupPSK(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	h := sha256.Sum256(key)
	return h[:], key, nil
}

// established starts replicating a session this node completed the
// handshake of: it may send below one reservation until its record is
// stored; then the record is written. Runs before the session's data.
// It reports whether es was taken over from another node instead.
// psk is the key the handshake used (nil: not known here, or a
// certificate session); the record carries its hash, so that a node
// taking the session over compares the device's key then with the key
// the session was made with, not with the key at the first write.
func (r *repl) established(es *engine.Session, psk []byte) (adopted bool) {
	r.mu.Lock()
	adopted = r.owned[es] != nil
	r.mu.Unlock()
	key, ok := r.keyOf(es.ConnectionID(), es.Addr())
	if adopted || !ok {
		return adopted
	}
	if r.cfg.Ready != nil && !r.cfg.Ready() {
		r.count(evLocalOnly)
		return false
	}
	res := r.cfg.Reserve
	r.srv.e.SetWriteLimit(es, res, res/2)
	o := &owned{key: key, es: es, limit: res}
	switch {
	case es.Identity() == nil:
		o.pskOf = pskCert
	case len(psk) > 0:
		o.psk, o.pskOf = sha256.Sum256(psk), pskSet
	}
	r.mu.Lock()
	r.owned[es] = o
	r.mu.Unlock()
	if d := r.cfg.FirstWriteAfter; d > 0 {
		r.firstWrite(o, d)
		return false
	}
	r.queue(o)
	return false
}

// firstWrite queues o's first write after d; a full queue (a reconnect
// storm) tries again after d.
func (r *repl) firstWrite(o *owned, d time.Duration) {
	time.AfterFunc(d, func() {
		r.mu.Lock()
		due := r.owned[o.es] == o && o.rev == 0 // not ended, nor written at its low water
		r.mu.Unlock()
		if due && !r.queue(o) && !r.stopped.Load() {
			r.firstWrite(o, d)
		}
	})
}

// queue asks a worker to store o's record (a first write or a new
// reservation), unless a job for it is pending. It reports false when the
// queue is full (counted as a failure).
func (r *repl) queue(o *owned) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o.queued {
		return true
	}
	select {
	case r.jobs <- replJob{o: o}:
		o.queued = true
		return true
	default:
		r.count(evFailures)
		return false
	}
}

// lowWater: the engine's hook (under its lock) when a session used half
// its reservation.
func (r *repl) lowWater(es *engine.Session) {
	r.mu.Lock()
	o := r.owned[es]
	r.mu.Unlock()
	if o != nil {
		r.queue(o)
	}
}

// closed: the session ended here. Unless another node took it over, its
// record goes.
func (r *repl) closed(es *engine.Session, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.owned[es]
	if o == nil {
		return
	}
	delete(r.owned, es)
	// A newer session under the same key (a new handshake from the
	// address) has its own revision: the delete below, by ours, spares it.
	if reason == engine.ReasonTakenOver || o.rev == 0 {
		return
	}
	select {
	case r.jobs <- replJob{o: o, delete: true, rev: o.rev}:
	default: // the record expires with the bucket's TTL
		r.count(evFailures)
	}
}

func (r *repl) jobWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-r.jobs:
			if j.delete {
				c, cancel := context.WithTimeout(ctx, storeTimeout)
				if err := r.cfg.Store.Delete(c, j.o.key.String(), j.rev); err == nil {
					r.count(evDeleted)
				}
				cancel()
				continue
			}
			r.store(ctx, j.o)
		}
	}
}

// store writes o's record with a new reservation (or, the first time, the
// one in force) and then lets the engine use it.
// One store runs at a time per session (queued stays set until it ends),
// so the stored end only grows and is never below the engine's limit.
// The engine's low-water call is re-armed only after queued is cleared,
// so none is lost.
func (r *repl) store(ctx context.Context, o *owned) {
	done := func() {
		r.mu.Lock()
		o.queued = false
		r.mu.Unlock()
	}
	r.mu.Lock()
	live := r.owned[o.es] == o
	rev, limit := o.rev, o.limit
	r.mu.Unlock()
	if !live {
		done()
		return
	}
	blob, wseq, err := r.srv.e.WriteState(o.es)
	if err != nil {
		done()
		return // ended meanwhile
	}
	c, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if o.pskOf == pskUnknown {
		// The handshake's key was not kept (its entry went under a flood
		// of handshakes): the device's key now stands in for it, since a
		// change since the handshake revokes the session at binding.
		h, _, err := r.pskHash(c, o.es.Identity())
		if err != nil {
			r.count(evFailures)
			done()
			r.srv.e.SetWriteLimit(o.es, limit, 0) // ask again on the next record sealed
			return
		}
		o.setPSK(h)
	}
	res := r.cfg.Reserve
	next := max(limit, wseq) + res
	if rev == 0 && wseq < limit-res/2 {
		next = limit // the first write stores the reservation in force
	}
	skey := o.key.String()
	val := r.seal(skey, record{owner: r.cfg.Node, limit: next, psk: o.pskHash(), blob: blob})
	var nrev uint64
	if rev == 0 {
		nrev, err = r.cfg.Store.Put(c, skey, val)
	} else {
		nrev, err = r.cfg.Store.Update(c, skey, val, rev)
		if errors.Is(err, ErrNotFound) {
			// Expired (an idle session outlived the bucket's TTL): nobody
			// took it over, since a takeover rewrites it.
			nrev, err = r.cfg.Store.Put(c, skey, val)
		}
	}
	switch {
	case errors.Is(err, ErrConflict):
		// Another node moved the record: it owns the session now.
		r.count(evConflicts)
		done()
		r.takenOver(o)
		return
	case err != nil:
		r.count(evFailures)
		r.warn.Log(context.Background(), slog.LevelWarn, "store", "dtls replication: storing a session failed; retried on its next record", "err", err)
		done()
		r.srv.e.SetWriteLimit(o.es, limit, 0) // ask again on the next record sealed
		return
	}
	r.mu.Lock()
	live = r.owned[o.es] == o
	if live {
		o.rev, o.limit = nrev, next
	}
	o.queued = false
	r.mu.Unlock()
	if !live {
		// The session ended while its record was written: remove it.
		if err := r.cfg.Store.Delete(c, skey, nrev); err == nil {
			r.count(evDeleted)
		}
		return
	}
	if rev == 0 {
		r.count(evExported)
	}
	if next > limit {
		r.count(evExtended)
	}
	r.srv.e.SetWriteLimit(o.es, next, next-res/2)
}

// takenOver drops o's session here, silently.
func (r *repl) takenOver(o *owned) {
	r.count(evTakenOver)
	r.srv.e.Drop(o.es)
}

// watch drops the sessions other nodes take over as soon as their records
// change.
func (r *repl) watch(ctx context.Context) {
	for ctx.Err() == nil {
		err := r.cfg.Store.Watch(ctx, func(key string, val []byte, rev uint64) {
			k, ok := compact(key)
			if !ok {
				return // not a key this node writes
			}
			es := r.sessionOf(k) // before r.mu: the engine calls into r under its lock
			r.mu.Lock()
			o := r.owned[es]
			stale := o != nil && rev > o.rev
			r.mu.Unlock()
			if !stale {
				return
			}
			if val != nil {
				v, err := r.open(key, val)
				if err != nil || v.owner == r.cfg.Node {
					return // ours (an update whose answer is on its way)
				}
			}
			r.takenOver(o)
		})
		if ctx.Err() != nil {
			return
		}
		r.count(evFailures)
		r.srv.log.Warn("dtls replication: watch ended; restarting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// unknown: the engine's hook (under its lock) for an epoch-1 record of no
// session here. Unauthenticated input: it costs at most a bounded queue
// entry and a negative-cache entry.
func (r *repl) unknown(cid []byte, addr netip.AddrPort, rec []byte) {
	key, ok := r.keyOf(cid, addr)
	if !ok {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.busy[key]; ok {
		r.count(evLookupsDrop) // a lookup of the key is on its way
		return
	}
	if until, ok := r.neg[key]; ok && now.Before(until) {
		r.count(evLookupsDrop)
		return
	}
	if len(r.busy) >= r.cfg.Lookups {
		r.count(evLookupsDrop)
		return
	}
	select {
	case r.look <- lookupJob{key: key, addr: addr, rec: append([]byte(nil), rec...)}:
		r.busy[key] = struct{}{}
		r.count(evLookups)
	default:
		r.count(evLookupsDrop)
	}
}

// refuse keeps key from being looked up for a while.
func (r *repl) refuse(key rkey) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.neg) >= negativeMax {
		for k, t := range r.neg {
			if now.After(t) {
				delete(r.neg, k)
			}
		}
		if len(r.neg) >= negativeMax {
			clear(r.neg)
		}
	}
	r.neg[key] = now.Add(negativeTTL)
}

func (r *repl) lookupWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-r.look:
			r.lookup(ctx, j)
			r.mu.Lock()
			delete(r.busy, j.key)
			r.mu.Unlock()
		}
	}
}

// lookup takes over the session of an unknown record if the store has it
// and the record authenticates under it.
func (r *repl) lookup(ctx context.Context, j lookupJob) {
	c, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	skey := j.key.String()
	val, rev, err := r.cfg.Store.Get(c, skey)
	switch {
	case errors.Is(err, ErrNotFound):
		r.count(evLookupMisses)
		r.refuse(j.key)
		return
	case err != nil:
		r.count(evFailures)
		r.refuse(j.key)
		return
	}
	v, err := r.open(skey, val)
	if err != nil {
		r.count(evFailures)
		r.refuse(j.key)
		return
	}
	if r.sessionOf(j.key) != nil {
		return // taken over by this node meanwhile
	}
	// Proof of possession before anything moves.
	if err := r.srv.e.VerifyRecord(v.blob, j.rec); err != nil {
		r.count(evLookupsDenied)
		r.refuse(j.key)
		return
	}
	// The gateway's checks before anything moves: the device is still
	// there, enabled, and its key is the one the session was made with
	// (a secret rotated while the owner was down ends the session).
	identity, err := r.srv.e.ExportedIdentity(v.blob)
	if err != nil {
		r.count(evFailures)
		r.refuse(j.key)
		return
	}
	h, key, err := r.pskHash(c, identity)
	switch {
	case err != nil && dtlspsk.Reason(err) == dtlspsk.ReasonStore:
		r.count(evFailures)
		r.refuse(j.key)
		return
	case err != nil || !bytes.Equal(h, v.psk):
		r.count(evStale)
		r.refuse(j.key)
		if err := r.cfg.Store.Delete(c, skey, rev); err == nil {
			r.count(evDeleted)
		}
		return
	}
	// Start beyond what the owner may have sealed since the record was
	// written, should the store have lost later writes (version 2
	// records: at the stored end).
	start := v.limit
	if v.written != 0 {
		start += engine.RollbackMargin(time.Since(time.Unix(0, v.written)))
	}
	res := r.cfg.Reserve
	next := start + res
	nrev, err := r.cfg.Store.Update(c, skey, r.seal(skey, record{owner: r.cfg.Node, limit: next, psk: v.psk, blob: v.blob}), rev)
	switch {
	case errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound):
		r.count(evConflicts)
		return
	case err != nil:
		r.count(evFailures)
		return
	}
	es, err := r.srv.e.Adopt(v.blob, j.addr, start, next, next-res/2)
	if err != nil {
		r.count(evFailures)
		r.warn.Log(context.Background(), slog.LevelWarn, "adopt", "dtls replication: installing a session taken over failed", "err", err)
		return
	}
	o := &owned{key: j.key, es: es, rev: nrev, limit: next}
	o.setPSK(v.psk)
	r.mu.Lock()
	r.owned[es] = o
	r.mu.Unlock()
	r.count(evImported)
	// The gateway's checks (device enabled, still there, keyed with its
	// secret as it is now: Session.KeyMatches) before any data.
	if key != nil {
		r.srv.remember(j.addr, identity, key)
	}
	r.srv.attach(es)
	if r.srv.e.Closed(es) {
		return
	}
	r.srv.e.HandleDatagram(j.rec, j.addr, time.Now())
}
