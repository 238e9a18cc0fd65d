package sqlitestore

import (
	"testing"

	"github.com/coapgate/coapgate/internal/command/commandtest"
	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/forward/forwardtest"
)

func TestCommandStore(t *testing.T) {
	commandtest.Run(t, func(t *testing.T) commandtest.Store {
		s, _ := openTemp(t)
		return s
	})
}

func TestForwardStore(t *testing.T) {
	forwardtest.Run(t, func(t *testing.T) forward.Store {
		s, _ := openTemp(t)
		return s
	})
}
