package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/coapgate/coapgate/internal/stats"
)

// StatsSource is the short in-memory history of the gateway's own counters
// (GET /api/v1/stats).
type StatsSource interface {
	Samples() []stats.Sample
	Interval() time.Duration
}

// errNoStats answers GET /stats when no history is kept.
var errNoStats = fmt.Errorf("%w: statistics are not kept on this node", errUnavailable)

// Stats is the body of GET /stats.
type Stats struct {
	IntervalSeconds float64        `json:"intervalSeconds"`
	Samples         []stats.Sample `json:"samples"`
}

// getStats answers this node's recent history, oldest sample first.
func (s *server) getStats(w http.ResponseWriter, r *http.Request) error {
	if err := allowQuery(r); err != nil {
		return err
	}
	if s.o.Stats == nil {
		return errNoStats
	}
	out := Stats{IntervalSeconds: s.o.Stats.Interval().Seconds(), Samples: s.o.Stats.Samples()}
	if out.Samples == nil {
		out.Samples = []stats.Sample{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
