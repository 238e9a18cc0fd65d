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
