package pgstore

import (
	"context"
	"testing"

	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/apikey/apikeytest"
	"github.com/coapgate/coapgate/internal/command/commandtest"
	"github.com/coapgate/coapgate/internal/event/eventtest"
	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/forward/forwardtest"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/message/messagetest"
	"github.com/coapgate/coapgate/internal/pgstore/pgtest"
	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/point/pointtest"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/registry/storetest"
	"github.com/coapgate/coapgate/internal/secretbox"
)

// testKeyRaw and testKeys are the key of the package's tests.
var (
	testKeyRaw = secretbox.GenerateKey()
	testKeys   = mustKeys(testKeyRaw)
)

func mustKeys(raw []byte) *secretbox.Keyring {
	k, err := secretbox.New(raw)
	if err != nil {
		panic(err)
	}
	return k
}

// openTest opens a store on a new schema, closed at cleanup; it returns
// the schema's URL too.
func openTest(t testing.TB) (*Store, string) {
	t.Helper()
	u := pgtest.Schema(t)
	s, err := Open(context.Background(), Options{URL: u, Keys: testKeys})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, u
}

func TestRegistryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) registry.Store {
		s, _ := openTest(t)
		return s
	})
}

func TestMessageStore(t *testing.T) {
	messagetest.Run(t, func(t *testing.T) message.Store {
		s, _ := openTest(t)
		return s
	})
}

func TestAPIKeyStore(t *testing.T) {
	apikeytest.Run(t, func(t *testing.T) apikey.Store {
		s, _ := openTest(t)
		return s
	})
}

func TestPointStore(t *testing.T) {
	pointtest.Run(t, func(t *testing.T) point.Store {
		s, _ := openTest(t)
		return s
	})
}

func TestEventStore(t *testing.T) {
	eventtest.Run(t, func(t *testing.T) eventtest.Store {
		s, _ := openTest(t)
		return s
	})
}

func TestCommandStore(t *testing.T) {
	commandtest.Run(t, func(t *testing.T) commandtest.Store {
		s, _ := openTest(t)
		return s
	})
}

func TestForwardStore(t *testing.T) {
	forwardtest.Run(t, func(t *testing.T) forward.Store {
		s, _ := openTest(t)
		return s
	})
}
