//go:build race

package engine

// raceEnabled: the race detector slows pion's handshakes about tenfold;
// the differential test then runs a few seeds (all of them run in the
// plain test run).
const raceEnabled = true
