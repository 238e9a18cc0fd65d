package coapx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Errors of server-initiated requests.
var (
	// ErrReset means the peer answered a server-initiated request with RST.
	ErrReset = errors.New("coap: request reset by peer")
	// ErrTimeout means no ACK came within MAX_RETRANSMIT retransmissions.
	ErrTimeout = errors.New("coap: request timed out")
	// ErrClosed means the server stopped (or is not serving yet).
	ErrClosed = errors.New("coap: server closed")
)

// OutRequest is a server-initiated request (for example a command pushed
// to a device). The server adds type CON, a fresh Message ID and token.
type OutRequest struct {
	Code    codes.Code
	Options message.Options
	Payload []byte
}

// outgoing is one server-initiated CON waiting for its ACK or RST.
type outgoing struct {
	token []byte
	done  chan *message.Message // capacity 1
}

// outTable holds the server-initiated exchanges in flight.
type outTable struct {
	mu sync.Mutex
	m  map[exchangeKey]*outgoing // guarded by mu
}

// retransmitTimeout is the wait after transmission attempt (0 for the
// first) of a CON: ACK_TIMEOUT scaled by rnd in [1, ACK_RANDOM_FACTOR],
// doubled per retransmission (RFC 7252 §4.2).
func retransmitTimeout(ackTimeout time.Duration, rnd float64, attempt int) time.Duration {
	return time.Duration(float64(ackTimeout)*rnd) << attempt
}

// Request sends r as a CON to peer (or over sess, when not nil) and waits
// for the peer's ACK, retransmitting per RFC 7252 §4.2 (Config.AckTimeout,
// 1.5 random factor, Config.MaxRetransmit). It returns the piggybacked
// response (Code Empty for an empty ACK), ErrReset for an RST, ErrTimeout
// when every transmission went unanswered, or ctx's error. A separate
// response after an empty ACK is not awaited.
func (s *Server) Request(ctx context.Context, peer netip.AddrPort, sess Session, r *OutRequest) (*Response, error) {
	if sess == nil && s.serving.Load() == nil && s.out == nil {
		return nil, ErrClosed
	}
	token := make([]byte, 8)
	randRead(token)
	mid := s.nextMID()
	k := exchangeKeyOf(peer, sess, mid)
	og := &outgoing{token: token, done: make(chan *message.Message, 1)}
	s.outs.mu.Lock()
	if s.outs.m == nil {
		s.outs.m = make(map[exchangeKey]*outgoing)
	}
	if _, busy := s.outs.m[k]; busy {
		s.outs.mu.Unlock()
		return nil, fmt.Errorf("coap: message ID %d to %s still in flight", mid, peer)
	}
	s.outs.m[k] = og
	s.outs.mu.Unlock()
	defer func() {
		s.outs.mu.Lock()
		delete(s.outs.m, k)
		s.outs.mu.Unlock()
	}()
	opts := append(message.Options(nil), r.Options...)
	out, err := s.encode(&Response{Code: r.Code, Options: opts, Payload: r.Payload}, message.Confirmable, mid, token)
	if err != nil {
		return nil, err
	}
	rnd := 1 + rand.Float64()*0.5
	timer := time.NewTimer(retransmitTimeout(s.cfg.AckTimeout, rnd, 0))
	defer timer.Stop()
	s.write(out, peer, sess)
	for attempt := 0; ; {
		select {
		case m := <-og.done:
			if m.Type == message.Reset {
				s.m.outRequest("reset")
				return nil, ErrReset
			}
			s.m.outRequest("acked")
			return &Response{Code: m.Code, Options: m.Options, Payload: m.Payload}, nil
		case <-timer.C:
			if attempt >= s.cfg.MaxRetransmit {
				s.m.outRequest("timeout")
				return nil, ErrTimeout
			}
			attempt++
			s.write(out, peer, sess)
			timer.Reset(retransmitTimeout(s.cfg.AckTimeout, rnd, attempt))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// matchOutgoing hands an ACK or RST to the server-initiated exchange it
// answers, if any (on the read path, before request handling). Stray ones
// are dropped, as before (RFC 7252 §4.2: an unexpected ACK is ignored).
func (s *Server) matchOutgoing(b []byte, peer netip.AddrPort, sess Session, mid uint16) {
	k := exchangeKeyOf(peer, sess, mid)
	s.outs.mu.Lock()
	og := s.outs.m[k]
	s.outs.mu.Unlock()
	if og == nil {
		return
	}
	raw, err := parseRequest(append([]byte(nil), b...)) // any number of options
	if err != nil {
		s.m.malformed("ack")
		return
	}
	m := &message.Message{Type: raw.typ, Code: raw.code, MessageID: int32(raw.mid), Token: raw.token,
		Options: raw.options, Payload: raw.payload}
	if m.Type == message.Acknowledgement && m.Code != codes.Empty && !bytes.Equal(m.Token, og.token) {
		return // a piggybacked response must echo the token (RFC 7252 §5.3.2)
	}
	select {
	case og.done <- m:
	default: // a duplicate ACK
	}
}
