package replay

import (
	"container/list"
	"errors"
	"hash/maphash"
	"sync"
	"time"
)

// ErrUnknownSession means this node has no state for a token it may have
// had state for: the token was issued at or before the node started, or at
// or before a still-valid session of the same shard was evicted. The device
// must authenticate again (4.01).
var ErrUnknownSession = errors.New("replay: no session state on this node for a token this old")

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
}

// Sessions is a bounded, sharded LRU table of per-session windows. Safe for
// concurrent use.
type Sessions struct {
	window int
	seed   maphash.Seed
	shards []shard
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
}

// Session is one token's anti-replay state.
type Session struct {
	key     Key
	issued  int64 // unix second of the token's IssuedAt
	expires time.Time

	mu  sync.Mutex
	win *Window // guarded by mu
}

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
	s := &Sessions{window: c.Window, seed: maphash.MakeSeed(), shards: make([]shard, n)}
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
	sess := &Session{key: k, issued: issuedAt.Unix(), expires: expiresAt, win: NewWindow(floor, s.window)}
	sh.m[k] = sh.lru.PushFront(sess)
	// Expired sessions at the cold end go for free (their tokens are
	// refused anyway); then make room, remembering what was forgotten.
	for range 2 {
		if b := sh.lru.Back(); b != nil && b.Value.(*Session) != sess && !b.Value.(*Session).expires.After(now) {
			sh.remove(b)
		}
	}
	for sh.lru.Len() > sh.max {
		b := sh.lru.Back()
		old := b.Value.(*Session)
		if old.expires.After(now) {
			sh.floor = max(sh.floor, old.issued)
			sh.evicted++
		}
		sh.remove(b)
	}
	return sess, nil
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.win.Check(seq); err != nil {
		return err
	}
	if accept != nil {
		if err := accept(); err != nil {
			return err
		}
	}
	s.win.Accept(seq)
	return nil
}
