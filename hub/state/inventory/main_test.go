package inventory

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// BenchmarkOpen300k re-runs this binary as a fresh "hub process" to measure its memory alone.
	if dir := os.Getenv(hubProcessEnv); dir != "" {
		os.Exit(hubProcess(dir))
	}
	goleak.VerifyTestMain(m)
}
