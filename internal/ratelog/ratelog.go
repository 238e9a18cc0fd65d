// Package ratelog bounds the rate of log lines that outside peers can
// trigger (refused authentications, refused handshakes): a token bucket per
// event kind lets a burst through and then a steady rate; lines over it are
// counted, not written, and a "log lines suppressed" summary with the count
// follows at most once per interval. Metrics, not logs, are the exact
// record of such events.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Config tunes a Limiter; zero fields take the defaults.
type Config struct {
	// Rate is the lines per second each kind may write once its burst is
	// spent (default 5).
	Rate float64
	// Burst is how many lines of a kind may be written at once (default 20).
	Burst int
	// Every is the least interval between two summaries of one kind
	// (default 10 s).
	Every time.Duration
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
}

// Limiter writes log lines through a logger at a bounded rate per kind.
// Kinds are chosen by the program (reasons), never by peers: the table of
// kinds stays small. Safe for concurrent use.
type Limiter struct {
	log *slog.Logger
	cfg Config

	mu    sync.Mutex
	kinds map[string]*bucket // guarded by mu
}

type bucket struct {
	tokens     float64
	last       time.Time // of the last refill
	suppressed uint64    // since the last summary
	total      uint64    // suppressed ever
	summarised time.Time // when the last summary was written
}

// New returns a Limiter writing to log.
func New(log *slog.Logger, cfg Config) *Limiter {
	if cfg.Rate <= 0 {
		cfg.Rate = 5
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 20
	}
	if cfg.Every <= 0 {
		cfg.Every = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Limiter{log: log, cfg: cfg, kinds: make(map[string]*bucket)}
}

// Log writes msg with args at level when kind's bucket has a token, and
// reports whether it did. A suppressed line is counted; a summary line
// ("log lines suppressed", kind, suppressed) is written before the next
// line of the kind that passes, or once Every has passed since the last
// summary while lines are still being suppressed.
func (l *Limiter) Log(ctx context.Context, level slog.Level, kind, msg string, args ...any) bool {
	if !l.log.Enabled(ctx, level) {
		return false
	}
	now := l.cfg.Now()
	l.mu.Lock()
	b := l.kinds[kind]
	if b == nil {
		b = &bucket{tokens: float64(l.cfg.Burst), last: now, summarised: now}
		l.kinds[kind] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(l.cfg.Burst), b.tokens+d.Seconds()*l.cfg.Rate)
		b.last = now
	}
	pass := b.tokens >= 1
	if pass {
		b.tokens--
	} else {
		b.suppressed++
		b.total++
	}
	var report uint64
	if b.suppressed > 0 && (pass || now.Sub(b.summarised) >= l.cfg.Every) {
		report, b.suppressed, b.summarised = b.suppressed, 0, now
	}
	l.mu.Unlock()
	if report > 0 {
		l.log.Log(ctx, level, "log lines suppressed", "kind", kind, "suppressed", report)
	}
	if pass {
		l.log.Log(ctx, level, msg, args...)
	}
	return pass
}

// Flush writes a summary for every kind with lines suppressed since its
// last one (for a flood that has stopped).
func (l *Limiter) Flush(ctx context.Context) {
	now := l.cfg.Now()
	type pending struct {
		kind string
		n    uint64
	}
	var out []pending
	l.mu.Lock()
	for k, b := range l.kinds {
		if b.suppressed > 0 {
			out = append(out, pending{k, b.suppressed})
			b.suppressed, b.summarised = 0, now
		}
	}
	l.mu.Unlock()
	for _, p := range out {
		l.log.Log(ctx, slog.LevelInfo, "log lines suppressed", "kind", p.kind, "suppressed", p.n)
	}
}

// Run calls Flush every Every until ctx is done.
func (l *Limiter) Run(ctx context.Context) {
	t := time.NewTicker(l.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.Flush(context.Background())
			return
		case <-t.C:
			l.Flush(ctx)
		}
	}
}

// Suppressed returns how many lines of kind were suppressed in all.
func (l *Limiter) Suppressed(kind string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.kinds[kind]; b != nil {
		return b.total
	}
	return 0
}
