package coapx

import (
	"bytes"
	"net/netip"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// transferKey correlates the blocks of one block-wise transfer: RFC 7959
// §2.4 matches them by endpoint and request target, not by token.
type transferKey struct {
	peer netip.AddrPort
	sess uint64 // secured session (peer zero), see exchangeKey
	code codes.Code
	path string
}

// budgetKey is whose reassembly budget a transfer draws on: the source
// address on plain UDP (every port of one host together), the session on
// a secured transport.
type budgetKey struct {
	addr netip.Addr
	sess uint64
}

func (k transferKey) owner() budgetKey {
	if k.sess != 0 {
		return budgetKey{sess: k.sess}
	}
	return budgetKey{addr: k.peer.Addr()}
}

// upload is a Block1 request body being reassembled.
type upload struct {
	anon     bool // admitted without a credential (Request.Anonymous)
	body     []byte
	reserved int // bytes charged to the budgets: the most body can grow to
	expires  time.Time
}

// download is a response body served in Block2 blocks.
type download struct {
	code    codes.Code
	options message.Options
	body    []byte
}

// BlockLimits bound Block1 reassembly (RFC 7959 §2.5).
type BlockLimits struct {
	// MaxBody is the largest request body.
	MaxBody int
	// PeerBudget bounds the bytes reserved by one peer's transfers in
	// progress, Budget those of every peer together. A transfer reserves
	// its Size1 (when announced) or MaxBody at its first block.
	PeerBudget int
	Budget     int
	// MaxTransfers bounds the transfers in progress.
	MaxTransfers int
}

// AnonymousMaxBody bounds the body of a Block1 transfer admitted without a
// credential (Request.Anonymous); such transfers together reserve at most
// an eighth of BlockLimits.Budget.
const AnonymousMaxBody = 4096

func (l BlockLimits) anonBudget() int { return l.Budget / 8 }

// BlockStats is the reassembly accounting.
type BlockStats struct {
	Transfers int // Block1 transfers in progress
	Reserved  int // bytes reserved by them (>= the bytes they buffer)
	Buffered  int // bytes they buffer
	Peers     int // peers with a transfer in progress
	MaxPeer   int // the most bytes one peer reserves
	Anonymous int // bytes reserved by anonymous transfers (part of Reserved)
}

// blockStore holds in-progress Block1 uploads and Block2 downloads, bounded
// in count, bytes and lifetime. A transfer that would exceed a bound is
// refused; none in progress is ever evicted to make room. Safe for
// concurrent use.
type blockStore struct {
	lim BlockLimits
	ttl time.Duration

	mu       sync.Mutex
	up       map[transferKey]*upload            // guarded by mu
	perPeer  map[budgetKey]int                  // guarded by mu; bytes reserved
	reserved int                                // guarded by mu
	anon     int                                // guarded by mu; reserved by anonymous transfers
	down     *fifoCache[transferKey, *download] // guarded by mu
}

func newBlockStore(lim BlockLimits, ttl time.Duration) *blockStore {
	return &blockStore{
		lim:     lim,
		ttl:     ttl,
		up:      make(map[transferKey]*upload),
		perPeer: make(map[budgetKey]int),
		down:    newFIFOCache[transferKey, *download](lim.MaxTransfers),
	}
}

// block1Result is what addBlock1 decided.
type block1Result int

const (
	block1Continue   block1Result = iota // intermediate block stored: answer 2.31
	block1Complete                       // last block: body is the whole request
	block1Incomplete                     // out-of-order, overlapping or unknown transfer: 4.08
	block1TooLarge                       // body over the limit: 4.13
	block1Busy                           // a budget is spent: 5.03 + Max-Age
)

// addBlock1 adds one Block1 block (RFC 7959 §2.5). Block 0 starts (or
// restarts) the transfer of k, reserving size1 bytes (0: MaxBody) from the
// peer's and the global budget. A later block is placed at NUM × block
// size (§2.3: the client may change SZX mid-transfer); it must continue
// the body exactly. A block that repeats the last one received (same
// offset, same bytes) is answered like the original; any other overlap or
// gap is 4.08.
func (s *blockStore) addBlock1(k transferKey, b block, payload []byte, size1 int, anon bool, now time.Time) (block1Result, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.up[k]
	if u != nil && !now.Before(u.expires) {
		s.release(k, u)
		u = nil
	}
	offset := int(b.num) * b.size()
	if b.num == 0 {
		if u != nil {
			s.release(k, u) // a restart replaces the transfer
		}
		want := s.lim.MaxBody
		if anon {
			want = min(want, AnonymousMaxBody)
		}
		if size1 > 0 && size1 < want {
			want = size1
		}
		if len(payload) > want {
			return block1TooLarge, nil
		}
		if !b.more {
			return block1Complete, payload // a single block: nothing to hold
		}
		owner := k.owner()
		if len(s.up) >= s.lim.MaxTransfers || s.reserved+want > s.lim.Budget || s.perPeer[owner]+want > s.lim.PeerBudget ||
			anon && s.anon+want > s.lim.anonBudget() {
			return block1Busy, nil
		}
		u = &upload{anon: anon, reserved: want, body: make([]byte, 0, min(want, 4*len(payload)))}
		s.up[k] = u
		s.perPeer[owner] += want
		s.reserved += want
		if anon {
			s.anon += want
		}
	} else {
		switch {
		case u == nil:
			return block1Incomplete, nil
		case offset == len(u.body):
		case offset+len(payload) == len(u.body) && offset >= 0 && bytes.Equal(u.body[offset:], payload) && b.more:
			// The last block again (a retransmission under a new Message
			// ID): acknowledged, nothing added.
			return block1Continue, nil
		default:
			return block1Incomplete, nil
		}
	}
	if len(u.body)+len(payload) > u.reserved {
		s.release(k, u)
		return block1TooLarge, nil
	}
	u.body = appendCapped(u.body, payload, u.reserved)
	u.expires = now.Add(s.ttl)
	if b.more {
		return block1Continue, nil
	}
	s.release(k, u)
	return block1Complete, u.body
}

// appendCapped appends p to b, growing b's capacity geometrically but never
// beyond limit (the reservation), so the accounting bounds the memory.
func appendCapped(b, p []byte, limit int) []byte {
	need := len(b) + len(p)
	if need > cap(b) {
		c := min(max(2*cap(b), need), limit)
		nb := make([]byte, len(b), c)
		copy(nb, b)
		b = nb
	}
	return append(b, p...)
}

// release forgets upload u of k and returns its reservation.
func (s *blockStore) release(k transferKey, u *upload) {
	if s.up[k] != u {
		return
	}
	delete(s.up, k)
	owner := k.owner()
	if n := s.perPeer[owner] - u.reserved; n > 0 {
		s.perPeer[owner] = n
	} else {
		delete(s.perPeer, owner)
	}
	s.reserved -= u.reserved
	if u.anon {
		s.anon -= u.reserved
	}
}

// has reports whether a Block1 transfer of k is in progress.
func (s *blockStore) has(k transferKey, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.up[k]
	return u != nil && now.Before(u.expires)
}

// putDownload stores a response body for later Block2 requests.
func (s *blockStore) putDownload(k transferKey, d *download, now time.Time) {
	s.mu.Lock()
	s.down.put(k, d, s.ttl, now)
	s.mu.Unlock()
}

// getDownload returns a stored response body.
func (s *blockStore) getDownload(k transferKey, now time.Time) (*download, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.down.get(k, now)
	if !ok {
		return nil, false
	}
	return e.val, true
}

func (s *blockStore) sweep(now time.Time) {
	s.mu.Lock()
	for k, u := range s.up {
		if !now.Before(u.expires) {
			s.release(k, u)
		}
	}
	s.down.expire(now)
	s.mu.Unlock()
}

// stats returns the Block1 accounting.
func (s *blockStore) stats() BlockStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := BlockStats{Transfers: len(s.up), Reserved: s.reserved, Peers: len(s.perPeer), Anonymous: s.anon}
	for _, u := range s.up {
		st.Buffered += len(u.body)
	}
	for _, n := range s.perPeer {
		st.MaxPeer = max(st.MaxPeer, n)
	}
	return st
}
