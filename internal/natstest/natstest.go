// Package natstest gives tests the NATS server named by
// COAPGATE_TEST_NATS_URL, or skips them when it is unset.
package natstest

import (
	"os"
	"testing"

	"github.com/nats-io/nats.go"
)

// EnvURL names the environment variable holding the test server's URL.
const EnvURL = "COAPGATE_TEST_NATS_URL"

// URL returns the test server's URL, skipping tb when it is unset.
func URL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		tb.Skipf("%s not set: no local NATS to test against", EnvURL)
	}
	return u
}

// Connect connects to the test server (closed at cleanup), skipping tb
// when it is unset.
func Connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(URL(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
