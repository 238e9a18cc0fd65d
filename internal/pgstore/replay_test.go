package pgstore

import (
	"testing"

	"github.com/coapgate/coapgate/internal/replay/replaytest"
)

func TestReplayStates(t *testing.T) {
	replaytest.Run(t, func(t *testing.T) replaytest.Store {
		s, _ := openTest(t)
		return s
	})
}

// TestReplayCluster: a number accepted through one node is refused through
// every other (the stored window is admitted against under a lock).
func TestReplayCluster(t *testing.T) {
	replaytest.RunCluster(t, func(t *testing.T) replaytest.ClusterStore {
		s, _ := openTest(t)
		return s
	})
}
