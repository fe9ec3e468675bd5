//go:build !race

package fanout_test

// raceEnabled is true under -race, where allocation counts are not exact.
const raceEnabled = false
