package pgstore

import (
	"testing"

	"github.com/coapgate/coapgate/internal/retention/retentiontest"
)

func TestRetentionStore(t *testing.T) {
	retentiontest.Run(t, func(t *testing.T) retentiontest.Store {
		s, _ := openTest(t)
		return s
	})
}
