package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The load engine of coapdev bench. Each lane is one socket (a connected UDP
// socket or a DTLS session) with exactly two goroutines: a sender that
// builds (usually: patches a pre-encoded datagram with the Message ID) and
// writes confirmable requests, and a receiver that matches ACK/RST by Message
// ID. Requests in flight live in a ring indexed by Message ID, so matching
// allocates nothing. A CON left unanswered is retransmitted per RFC 7252
// §4.2 (ACK_TIMEOUT with random factor 1.5, doubling, MAX_RETRANSMIT 4).

const (
	laneWindow     = 1024 // max requests in flight per lane; divides 65536
	maxRetransmit  = 4
	ackRandomFactr = 1.5
	maxDatagram    = 1500
)

// builder writes the datagram of one request with Message ID mid into dst
// and returns it. Deterministic builders (pre-encoded templates) let
// retransmissions rebuild; others have their bytes kept in the slot.
type builder interface {
	build(dst []byte, mid uint16) ([]byte, error)
}

// loadConfig is the load shape.
type loadConfig struct {
	rate        float64       // open loop: target req/s over all lanes (0: closed loop)
	outstanding int           // closed loop: requests in flight over all lanes
	ackTimeout  time.Duration // RFC 7252 ACK_TIMEOUT
	warmup      time.Duration
	duration    time.Duration
	drain       time.Duration // wait for answers after the run
}

// loadStats are shared by all lanes.
type loadStats struct {
	measuring   atomic.Bool
	sent        atomic.Uint64 // first transmissions in the measured window
	ok          atomic.Uint64 // 2.xx answers
	codes       [256]atomic.Uint64
	rst         atomic.Uint64
	timeouts    atomic.Uint64 // retransmissions exhausted
	retransmits atomic.Uint64
	overload    atomic.Uint64 // open loop: window full, request not sent
	writeErrs   atomic.Uint64
	buildErrs   atomic.Uint64
	readErrs    atomic.Uint64
	stray       atomic.Uint64 // datagrams matching nothing in flight
	inflight    atomic.Int64
	lat         hist
}

type slot struct {
	state    uint8 // 0 free, 1 in flight
	measured bool
	tries    uint8
	mid      uint16
	first    time.Time
	deadline time.Time
	timeout  time.Duration
	data     []byte
}

type lane struct {
	conn   net.Conn
	b      builder
	keep   bool // keep datagram bytes for retransmission
	cfg    *loadConfig
	st     *loadStats
	limit  int     // closed loop: in flight on this lane
	rate   float64 // open loop: req/s on this lane
	nextID uint32  // sequence of the next request; MID = low 16 bits

	closed atomic.Bool

	mu      sync.Mutex
	pending int // slots in flight
	slots   [laneWindow]slot
	sem     chan struct{}
}

func newLane(conn net.Conn, b builder, keep bool, cfg *loadConfig, st *loadStats, limit int, rate float64) *lane {
	l := &lane{conn: conn, b: b, keep: keep, cfg: cfg, st: st, limit: limit, rate: rate}
	l.nextID = rand.Uint32()
	if limit > 0 {
		l.sem = make(chan struct{}, limit)
		for range limit {
			l.sem <- struct{}{}
		}
	}
	return l
}

// runLanes drives all lanes until ctx ends or stop is closed, then waits up
// to cfg.drain for answers. It returns when all lane goroutines are done.
func runLanes(ctx context.Context, lanes []*lane, stop <-chan struct{}) {
	var senders, receivers sync.WaitGroup
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-stop:
		case <-sctx.Done():
		}
		cancel()
	}()
	for _, l := range lanes {
		receivers.Go(l.receive)
		senders.Go(func() { l.send(sctx) })
	}
	senders.Wait()
	// Drain: give answers to what is in flight time to arrive.
	end := time.Now().Add(cfgDrain(lanes))
	for time.Now().Before(end) && len(lanes) > 0 && lanes[0].st.inflight.Load() > 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	for _, l := range lanes {
		l.closed.Store(true)
		l.conn.Close()
	}
	receivers.Wait()
}

func cfgDrain(lanes []*lane) time.Duration {
	if len(lanes) == 0 {
		return 0
	}
	return lanes[0].cfg.drain
}

// send is the sender goroutine.
func (l *lane) send(ctx context.Context) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, maxDatagram)
	if l.sem != nil {
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				l.retransmit(time.Now())
			case <-l.sem:
				if !l.sendOne(buf) {
					l.sem <- struct{}{}
					// The window is full of requests awaiting retransmission.
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
						l.retransmit(time.Now())
					}
				}
			}
		}
	}
	start := time.Now()
	var sent float64
	lastRetx := start
	for ctx.Err() == nil {
		now := time.Now()
		due := now.Sub(start).Seconds()*l.rate - sent
		for ; due >= 1; due-- {
			if !l.sendOne(buf) && l.st.measuring.Load() {
				l.st.overload.Add(1)
			}
			sent++
		}
		if now.Sub(lastRetx) >= 20*time.Millisecond {
			l.retransmit(now)
			lastRetx = now
		}
		wait := time.Duration((1 - due) / l.rate * float64(time.Second))
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 50*time.Microsecond)):
		}
	}
}

// sendOne sends the next request; false if the window is full.
func (l *lane) sendOne(buf []byte) bool {
	l.mu.Lock()
	if l.pending >= laneWindow {
		l.mu.Unlock()
		return false
	}
	// Skip slots still held by a request awaiting retransmission: one lost
	// datagram must not stall the lane (no head-of-line blocking).
	for l.slots[l.nextID%laneWindow].state != 0 {
		l.nextID++
	}
	seq := l.nextID
	mid := uint16(seq)
	data, err := l.b.build(buf, mid)
	if err != nil {
		l.mu.Unlock()
		l.st.buildErrs.Add(1)
		if l.sem != nil {
			l.sem <- struct{}{}
		}
		time.Sleep(time.Millisecond) // do not spin on a broken builder
		return true
	}
	l.nextID++
	s := &l.slots[seq%laneWindow]
	now := time.Now()
	s.state, s.tries, s.mid, s.first = 1, 0, mid, now
	l.pending++
	s.measured = l.st.measuring.Load()
	s.timeout = time.Duration(float64(l.cfg.ackTimeout) * (1 + rand.Float64()*(ackRandomFactr-1)))
	s.deadline = now.Add(s.timeout)
	if l.keep {
		s.data = append(s.data[:0], data...)
	}
	l.mu.Unlock()
	if s.measured {
		l.st.sent.Add(1)
	}
	l.st.inflight.Add(1)
	if _, err := l.conn.Write(data); err != nil {
		// Counted; the request stays in flight and is retransmitted.
		l.st.writeErrs.Add(1)
	}
	return true
}

// retransmit resends what timed out and gives up after MAX_RETRANSMIT.
func (l *lane) retransmit(now time.Time) {
	var buf [maxDatagram]byte
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.slots {
		s := &l.slots[i]
		if s.state != 1 || now.Before(s.deadline) {
			continue
		}
		if s.tries >= maxRetransmit {
			l.finishLocked(s, -1)
			continue
		}
		s.tries++
		s.timeout *= 2
		s.deadline = now.Add(s.timeout)
		l.st.retransmits.Add(1)
		data := s.data
		if !l.keep {
			var err error
			if data, err = l.b.build(buf[:], s.mid); err != nil {
				continue
			}
		}
		if _, err := l.conn.Write(data); err != nil {
			l.st.writeErrs.Add(1)
		}
	}
}

// finishLocked completes a request: code is the response code byte, -1 for
// a timeout, -2 for a reset.
func (l *lane) finishLocked(s *slot, code int) {
	s.state = 0
	l.pending--
	l.st.inflight.Add(-1)
	if s.measured {
		switch {
		case code == -1:
			l.st.timeouts.Add(1)
		case code == -2:
			l.st.rst.Add(1)
		default:
			l.st.codes[code].Add(1)
			if code>>5 == 2 {
				l.st.ok.Add(1)
				l.st.lat.add(time.Since(s.first))
			}
		}
	}
	if l.sem != nil {
		l.sem <- struct{}{}
	}
}

// receive is the receiver goroutine; it ends when the conn is closed.
func (l *lane) receive() {
	buf := make([]byte, 64<<10)
	for {
		n, err := l.conn.Read(buf)
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// e.g. ICMP port unreachable surfacing as ECONNREFUSED, or a
			// DTLS alert: counted, and the requests time out.
			l.st.readErrs.Add(1)
			time.Sleep(time.Millisecond)
			continue
		}
		l.handle(buf[:n])
	}
}

// handle matches one datagram (RFC 7252 §3 header) to a request in flight.
func (l *lane) handle(b []byte) {
	if len(b) < 4 || b[0]>>6 != 1 {
		l.st.stray.Add(1)
		return
	}
	typ := b[0] >> 4 & 3
	code := int(b[1])
	mid := uint16(b[2])<<8 | uint16(b[3])
	if typ != 2 && typ != 3 { // only ACK and RST answer our CONs
		l.st.stray.Add(1)
		return
	}
	l.mu.Lock()
	s := &l.slots[uint32(mid)%laneWindow]
	if s.state != 1 || s.mid != mid {
		l.mu.Unlock()
		l.st.stray.Add(1) // a duplicate answer to a retransmission, or late
		return
	}
	if typ == 3 {
		code = -2
	}
	l.finishLocked(s, code)
	l.mu.Unlock()
}
