package sqlitestore

import (
	"testing"

	"github.com/coapgate/coapgate/internal/event/eventtest"
)

func TestEventStore(t *testing.T) {
	eventtest.Run(t, func(t *testing.T) eventtest.Store {
		s, _ := openTemp(t)
		return s
	})
}
