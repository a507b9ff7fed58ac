//go:build race

package buffer

// raceEnabled shortens the slowest tests under the race detector (it makes Badger ~5x slower).
const raceEnabled = true
