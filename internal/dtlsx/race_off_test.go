//go:build !race

package dtlsx

const raceEnabled = false
