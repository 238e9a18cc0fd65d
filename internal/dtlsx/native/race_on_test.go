//go:build race

package native

// raceEnabled: the race detector slows pion's handshakes about tenfold;
// tests of many handshakes then run fewer.
const raceEnabled = true
