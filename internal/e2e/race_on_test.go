//go:build race

package e2e

// raceEnabled: the race detector slows the 200,000-event replay ~6x; under it
// the replay test runs on a smaller store (see replayEvents).
const raceEnabled = true
