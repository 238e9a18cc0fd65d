package replay

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUnknownSession means this node has no state for a token it may have
// had state for: the token was issued at or before the node started, or at
// or before a still-valid session of the same shard was evicted. The device
// must authenticate again (4.01).
var ErrUnknownSession = errors.New("replay: no session state on this node for a token this old")

// ErrExpired means the session's lifetime passed: its token was not used
// for the configured lifetime (and its issued lifetime is over too). The
// device must authenticate again (4.01).
var ErrExpired = errors.New("replay: session expired")

// Store is durable session state: a node rebuilds a session it does not
// hold from it (after a restart, an eviction, or when the session moves
// from another node that shares the store). States are written by the
// uplink path in the same transaction as the uplink that advanced them
// (package ingest), so LoadReplayState is the whole interface a reader
// needs. Implementations are safe for concurrent use.
type Store interface {
	// LoadReplayState returns the newest state saved for k; ok is false
	// when there is none.
	LoadReplayState(ctx context.Context, k Key) (st State, ok bool, err error)
}

// Key identifies a session: the token's device and random.
type Key struct {
	ProductKey string
	DeviceKey  string
	Random     [8]byte
}

// Config sizes a Sessions table.
type Config struct {
	// Started is when the node started; tokens issued at or before its
	// second (token times have 1 s resolution) have no usable state here.
	Started time.Time
	// Window is the size of each session's Window (default 1024).
	Window int
	// MaxSessions bounds the table (default 100000); the least recently
	// used session is evicted beyond it.
	MaxSessions int
	// Lifetime is the sliding lifetime: a session stays valid this long
	// after its last accepted number, and at least until its token's
	// expiry. 0: the token's expiry only.
	Lifetime time.Duration
	// Store, when set, holds the sessions' durable state: a session this
	// node does not hold is rebuilt from it before the rules above apply.
	Store Store
}

// Sessions is a bounded, sharded LRU table of per-session windows. Safe for
// concurrent use.
type Sessions struct {
	restored atomic.Uint64 // sessions rebuilt from the Store
	window   int
	lifetime time.Duration
	store    Store
	seed     maphash.Seed
	shards   []shard
}

// shard is one lock domain with its own LRU and floor: a key always maps to
// the same shard, so an eviction only raises the floor of the tokens that
// could have lived in it.
type shard struct {
	mu      sync.Mutex
	max     int
	floor   int64                 // guarded by mu; tokens issued at or before this unix second need an existing session
	m       map[Key]*list.Element // guarded by mu; values are *Session
	lru     list.List             // guarded by mu; front = most recently used
	evicted uint64                // guarded by mu; live sessions evicted for room
	// unknown remembers tokens refused with ErrUnknownSession (no state here
	// nor in the Store, and too old for a fresh one), so that a device that
	// keeps sending with such a token costs no store read per datagram:
	// nothing can create their state later. Cleared when full.
	unknown map[Key]int64 // guarded by mu; the token's issue second
}

// maxUnknown bounds a shard's remembered unknown tokens.
const maxUnknown = 4096

// Session is one token's anti-replay state.
type Session struct {
	key      Key
	issued   int64 // unix second of the token's IssuedAt
	lifetime time.Duration
	expires  atomic.Int64 // unix nanoseconds; written under mu, read by the LRU
	// inflight counts numbers accepted whose state is not yet durable
	// (UseAt until Release): such a session is not evicted, since rebuilding
	// it from the store would forget them.
	inflight atomic.Int32

	mu      sync.Mutex
	win     *Window // guarded by mu
	version uint64  // guarded by mu; numbers accepted, plus the restored state's
}

func (s *Session) expiresAt() time.Time { return time.Unix(0, s.expires.Load()) }

// NewSessions returns an empty table.
func NewSessions(c Config) *Sessions {
	if c.Window <= 0 {
		c.Window = 1024
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 100000
	}
	n := 1
	if c.MaxSessions >= 4096 {
		n = 16
	}
	s := &Sessions{window: c.Window, lifetime: c.Lifetime, store: c.Store, seed: maphash.MakeSeed(), shards: make([]shard, n)}
	for i := range s.shards {
		s.shards[i] = shard{max: (c.MaxSessions + n - 1) / n, floor: c.Started.Unix(), m: make(map[Key]*list.Element)}
	}
	return s
}

func (s *Sessions) shard(k Key) *shard {
	if len(s.shards) == 1 {
		return &s.shards[0]
	}
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(k.ProductKey)
	h.WriteByte(0)
	h.WriteString(k.DeviceKey)
	h.Write(k.Random[:])
	return &s.shards[h.Sum64()%uint64(len(s.shards))]
}

// Create returns k's session, creating it with a Window whose floor is
// floor when it does not exist. The node calls it for a token it has just
// issued, so that its own tokens have state even when issued in the second
// the node started. issuedAt and expiresAt are the token's; now is the
// current time.
func (s *Sessions) Create(k Key, floor uint64, issuedAt, expiresAt, now time.Time) *Session {
	sess, _ := s.get(k, floor, issuedAt, expiresAt, now, true)
	return sess
}

// Get returns k's session. When it does not exist it is created (a token
// issued by another node of a cluster, whose state is per node) only if the
// token is younger than everything this shard may have forgotten: issued
// after the node started and after every eviction of a live session.
// Otherwise ErrUnknownSession.
func (s *Sessions) Get(k Key, floor uint64, issuedAt, expiresAt, now time.Time) (*Session, error) {
	return s.get(k, floor, issuedAt, expiresAt, now, false)
}

func (s *Sessions) get(k Key, floor uint64, issuedAt, expiresAt, now time.Time, create bool) (*Session, error) {
	sh := s.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.m[k]; ok {
		sh.lru.MoveToFront(e)
		return e.Value.(*Session), nil
	}
	if !create && issuedAt.Unix() <= sh.floor {
		return nil, ErrUnknownSession
	}
	return s.insert(sh, s.newSession(k, issuedAt, expiresAt, NewWindow(floor, s.window), 0), now), nil
}

// Lookup returns k's session for an uplink at now: the one this node
// holds, else the one rebuilt from the Store, else (a token younger than
// anything this node may have forgotten, as Get) a new one. ErrExpired
// when the session outlived its lifetime; ErrUnknownSession as Get; any
// other error is the Store's (the caller answers 5.03).
func (s *Sessions) Lookup(ctx context.Context, k Key, floor uint64, issuedAt, expiresAt, now time.Time) (*Session, error) {
	sh := s.shard(k)
	sh.mu.Lock()
	if issued, ok := sh.unknown[k]; ok && issued == issuedAt.Unix() {
		sh.mu.Unlock()
		return nil, ErrUnknownSession
	}
	if e, ok := sh.m[k]; ok {
		sh.lru.MoveToFront(e)
		sess := e.Value.(*Session)
		sh.mu.Unlock()
		if !now.Before(sess.expiresAt()) {
			return nil, ErrExpired
		}
		return sess, nil
	}
	sh.mu.Unlock()
	if s.store != nil {
		st, ok, err := s.store.LoadReplayState(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("replay: load session state: %w", err)
		}
		if ok {
			if !now.Before(st.Expires) {
				return nil, ErrExpired
			}
			sess := s.newSession(k, issuedAt, st.Expires, restoreWindow(st, s.window), st.Version)
			sh.mu.Lock()
			defer sh.mu.Unlock()
			if e, ok := sh.m[k]; ok { // rebuilt meanwhile by a concurrent request
				sh.lru.MoveToFront(e)
				return e.Value.(*Session), nil
			}
			s.restored.Add(1)
			return s.insert(sh, sess, now), nil
		}
	}
	if !now.Before(expiresAt) {
		return nil, ErrExpired // no state outlives the token's own lifetime
	}
	sess, err := s.Get(k, floor, issuedAt, expiresAt, now)
	if errors.Is(err, ErrUnknownSession) && s.store != nil {
		sh.mu.Lock()
		if len(sh.unknown) >= maxUnknown || sh.unknown == nil {
			sh.unknown = make(map[Key]int64)
		}
		sh.unknown[k] = issuedAt.Unix()
		sh.mu.Unlock()
	}
	return sess, err
}

func (s *Sessions) newSession(k Key, issuedAt, expiresAt time.Time, w *Window, version uint64) *Session {
	sess := &Session{key: k, issued: issuedAt.Unix(), lifetime: s.lifetime, win: w, version: version}
	sess.expires.Store(expiresAt.UnixNano())
	return sess
}

// insert adds sess to sh (locked) as the most recently used session and
// makes room.
func (s *Sessions) insert(sh *shard, sess *Session, now time.Time) *Session {
	sh.m[sess.key] = sh.lru.PushFront(sess)
	// Expired sessions at the cold end go for free (their tokens are
	// refused anyway); then make room, remembering what was forgotten.
	for range 2 {
		if b := sh.lru.Back(); b != nil && b.Value.(*Session) != sess && !b.Value.(*Session).expiresAt().After(now) {
			sh.remove(b)
		}
	}
	for sh.lru.Len() > sh.max {
		b := sh.victim(sess)
		old := b.Value.(*Session)
		if old.expiresAt().After(now) {
			sh.floor = max(sh.floor, old.issued)
			sh.evicted++
		}
		sh.remove(b)
	}
	return sess
}

// victimScan bounds how far from the cold end eviction looks for a session
// without uncommitted numbers.
const victimScan = 8

// victim picks the session to evict: the least recently used one without
// uncommitted numbers among the coldest victimScan, else the coldest.
func (sh *shard) victim(keep *Session) *list.Element {
	e := sh.lru.Back()
	for i := 0; e != nil && i < victimScan; i, e = i+1, e.Prev() {
		if s := e.Value.(*Session); s != keep && s.inflight.Load() == 0 {
			return e
		}
	}
	return sh.lru.Back()
}

func (sh *shard) remove(e *list.Element) {
	delete(sh.m, e.Value.(*Session).key)
	sh.lru.Remove(e)
}

// Len returns the number of sessions held.
func (s *Sessions) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.lru.Len()
		sh.mu.Unlock()
	}
	return n
}

// Restored returns how many sessions were rebuilt from the Store.
func (s *Sessions) Restored() uint64 { return s.restored.Load() }

// Evicted returns how many unexpired sessions were evicted for room.
func (s *Sessions) Evicted() uint64 {
	var n uint64
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.evicted
		sh.mu.Unlock()
	}
	return n
}

// Use runs the uplink numbered seq through the session, holding its lock:
// a refused number returns the Window's error (IsReplay) without calling
// accept; otherwise accept runs (decrypting the payload, say) and the number
// is marked used only if accept returns nil, whose error Use returns. So a
// number is never accepted twice, even by concurrent requests, and a
// request that fails accept does not burn it.
func (s *Session) Use(seq uint64, accept func() error) error {
	_, err := s.UseAt(seq, time.Time{}, accept)
	if err == nil {
		s.Release() // nothing to persist
	}
	return err
}

// UseAt is Use for an uplink received at now: an accepted number also
// extends the session's sliding lifetime to now + Lifetime, and the
// session's state after it is returned, to be made durable with the
// uplink. After an accepted number the caller calls Release once the state
// was committed (or failed to be).
func (s *Session) UseAt(seq uint64, now time.Time, accept func() error) (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.win.Check(seq); err != nil {
		return State{}, err
	}
	if accept != nil {
		if err := accept(); err != nil {
			return State{}, err
		}
	}
	s.win.Accept(seq)
	s.inflight.Add(1)
	s.version++
	if s.lifetime > 0 && !now.IsZero() {
		if e := now.Add(s.lifetime).UnixNano(); e > s.expires.Load() {
			s.expires.Store(e)
		}
	}
	st := s.stateLocked()
	st.Accepted = seq
	return st, nil
}

// Release ends what UseAt began: the accepted number's state is durable (or
// its commit failed), so the session may be evicted again.
func (s *Session) Release() { s.inflight.Add(-1) }

// State returns the session's current state (to persist a new session).
func (s *Session) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stateLocked()
}

func (s *Session) stateLocked() State {
	st := s.win.snapshot()
	st.Key, st.Version, st.Expires = s.key, s.version, s.expiresAt()
	return st
}
