package quality

import (
	"fmt"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// countValues counts the entries of monitor log messages.
type countValues struct{ chunks, values int }

func (c *countValues) chunk(string, signal.Stream, string, uint64, uint64) { c.chunks++ }
func (c *countValues) value(string, []byte, float64, int64, bool)          { c.values++ }
func (c *countValues) samples(string, []byte, int64, uint64, uint64)       {}

// Every monitor log message fits the log's max_msg_size, whatever the agents' messages hold: a
// message over it is refused by JetStream every time, and since the ingest retries the observer's
// flush in place (the batch's stock already moved), one such message stopped ingest for good. A
// chunk that would overflow the message being written starts a new one; one that alone exceeds a
// message keeps what fits (counted as truncated) rather than refusing the whole batch forever.
func TestMonitorMessagesFitTheLog(t *testing.T) {
	o := newObserver(nil, "x", defs, nil, time.Hour)
	a := &agent{id: "a1", inc: "i1"}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	many := func(n, from int) []signal.Feature {
		fs := make([]signal.Feature, n)
		for i := range fs {
			fs[i] = mean(fmt.Sprintf("line%06d.oven.temp", from+i), t0, 1)
		}
		return fs
	}
	// Two chunks of ~500 KB: each fits, together they do not.
	o.Observe(a.batch(many(12000, 0)...))
	o.Observe(a.batch(many(12000, 12000)...))
	// One chunk larger than any message.
	o.Observe(a.batch(many(40000, 24000)...))
	o.mu.Lock()
	o.seal()
	msgs := o.pending
	o.mu.Unlock()
	var c countValues
	for i, m := range msgs {
		if len(m) > maxMsgSize {
			t.Errorf("message %d is %d bytes, the log takes at most %d", i, len(m), maxMsgSize)
		}
		if err := scan(m, &c); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if c.chunks != 3 || c.values < 24000 || c.values >= 64000 {
		t.Fatalf("%d chunks and %d values in %d messages; want 3 chunks, the two whole chunks' 24000 values and part of the third", c.chunks, c.values, len(msgs))
	}
	if got := o.Stats.Truncated.Load(); got != 1 {
		t.Fatalf("truncated chunks counted %d, want 1", got)
	}
}
