package hubbench

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(child(dir)) // this binary re-run as the measured hub process (BenchmarkRSS)
	}
	goleak.VerifyTestMain(m)
}
