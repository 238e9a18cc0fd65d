package coapx

import (
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

// upload is a Block1 request body being reassembled.
type upload struct {
	next uint32 // the block number expected next
	body []byte
}

// download is a response body served in Block2 blocks.
type download struct {
	code    codes.Code
	options message.Options
	body    []byte
}

// blockStore holds in-progress Block1 uploads and Block2 downloads, bounded
// in count and lifetime. Safe for concurrent use.
type blockStore struct {
	mu   sync.Mutex
	up   *fifoCache[transferKey, *upload]   // guarded by mu
	down *fifoCache[transferKey, *download] // guarded by mu
	ttl  time.Duration
}

func newBlockStore(max int, ttl time.Duration) *blockStore {
	return &blockStore{
		up:   newFIFOCache[transferKey, *upload](max),
		down: newFIFOCache[transferKey, *download](max),
		ttl:  ttl,
	}
}

// block1Result is what addBlock1 decided.
type block1Result int

const (
	block1Continue   block1Result = iota // intermediate block stored: answer 2.31
	block1Complete                       // last block: body is the whole request
	block1Incomplete                     // out-of-order or unknown transfer: 4.08
	block1TooLarge                       // body over the limit: 4.13
)

// addBlock1 adds one Block1 block (RFC 7959 §2.5).
func (s *blockStore) addBlock1(k transferKey, b block, payload []byte, maxBody int, now time.Time) (block1Result, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var u *upload
	if b.num == 0 {
		u = &upload{}
		s.up.put(k, u, s.ttl, now)
	} else {
		e, ok := s.up.get(k, now)
		if !ok || e.val.next != b.num {
			return block1Incomplete, nil
		}
		u = e.val
	}
	if len(u.body)+len(payload) > maxBody {
		s.up.del(k)
		return block1TooLarge, nil
	}
	u.body = append(u.body, payload...)
	u.next = b.num + 1
	if b.more {
		return block1Continue, nil
	}
	s.up.del(k)
	return block1Complete, u.body
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
	s.up.expire(now)
	s.down.expire(now)
	s.mu.Unlock()
}
