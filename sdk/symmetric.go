package sdk

import (
	"sync/atomic"

	"github.com/coapgate/coapgate/internal/auth/symmetric"
)

// authState is a token with, in symmetric mode, its session.
type authState struct {
	token string
	sym   *symSession
}

// usable reports whether st can authenticate a publish: a token, and in
// symmetric mode its session (a token given by WithToken has none).
func (st authState) usable(symmetricMode bool) bool {
	return st.token != "" && (!symmetricMode || st.sym != nil)
}

// symSession is a symmetric-encryption session (docs/protocol.md §3.4).
type symSession struct {
	random    string
	seqOffset uint64
	key       symmetric.Key
	next      atomic.Uint64 // sequence numbers handed out so far
}

func newSymSession(secret string, ar authResponse) *symSession {
	return &symSession{random: ar.Random, seqOffset: ar.SeqOffset, key: symmetric.SessionKey(secret, ar.Random)}
}

// seal encrypts a payload and returns it with the option 2089 value of the
// next sequence number (seqOffset, seqOffset+1, ...). Concurrent publishes
// get distinct numbers; the server accepts them in any order within its
// replay window.
func (s *symSession) seal(payload []byte) (body, seqOpt []byte) {
	seq := s.seqOffset + s.next.Add(1) - 1
	body, _ = symmetric.Encrypt(s.key, []byte(symmetric.IV), payload) // the IV is 16 bytes
	return body, symmetric.EncryptSeq(s.key, seq)
}

func (s *symSession) open(payload []byte) ([]byte, error) {
	return symmetric.Decrypt(s.key, []byte(symmetric.IV), payload)
}

// SymmetricSession describes the symmetric-encryption session of a Client.
type SymmetricSession struct {
	Token     string
	Random    string // as the server sent it: 16 hex characters
	SeqOffset uint64 // the first sequence number of the session
	// Sent is how many sequence numbers the Client has used.
	Sent uint64
}

// SymmetricSession returns the current symmetric session; false before the
// first Auth or without WithSymmetric.
func (c *Client) SymmetricSession() (SymmetricSession, bool) {
	st := c.auth()
	if st.sym == nil {
		return SymmetricSession{}, false
	}
	return SymmetricSession{Token: st.token, Random: st.sym.random, SeqOffset: st.sym.seqOffset, Sent: st.sym.next.Load()}, true
}
