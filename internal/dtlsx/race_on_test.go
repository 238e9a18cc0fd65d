//go:build race

package dtlsx

// raceEnabled: the race detector slows handshakes about tenfold; the
// storm test then runs a tenth of its devices (the full storm runs in
// the plain test run).
const raceEnabled = true
