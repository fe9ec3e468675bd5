//go:build race

package codec

// raceEnabled is true under -race, where allocation counts are not exact.
const raceEnabled = true
