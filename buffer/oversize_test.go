package buffer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// TestAppendLargerThanCap: one Append whose records together exceed max_bytes can never fit, not
// even into an empty store. It is refused (ErrFull, counted as full) under every policy, without
// evicting the backlog for nothing (drop_oldest) and without waiting for space that acks can never
// make (block).
func TestAppendLargerThanCap(t *testing.T) {
	for _, policy := range []string{DropOldest, Block, DropNewest} {
		t.Run(policy, func(t *testing.T) {
			for _, im := range impls {
				t.Run(im.name, func(t *testing.T) {
					b := openT(t, im, groupConfig(t, policy))
					appendT(t, b, signal.StreamFeatures, rec("feature"))
					appendT(t, b, signal.StreamSamples, bigRec(0), bigRec(1))
					var huge [][]byte // 5 MiB in one append through a 4 MiB cap
					for i := range 80 {
						huge = append(huge, bigRec(100+i))
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_, err := b.Append(ctx, signal.StreamSamples, huge...)
					if !errors.Is(err, ErrFull) || errors.Is(err, context.DeadlineExceeded) {
						t.Fatalf("append of %d records larger than max_bytes: %v, want ErrFull at once", len(huge), err)
					}
					st := b.Stats()
					s, f := st.Streams[signal.StreamSamples], st.Streams[signal.StreamFeatures]
					if s.Records != 2 || f.Records != 1 || s.Dropped["max_bytes"]+f.Dropped["max_bytes"] != 0 {
						t.Fatalf("backlog after a refused oversized append: %d samples, %d features waiting, dropped %v / %v; want 2 and 1, none dropped",
							s.Records, f.Records, s.Dropped, f.Dropped)
					}
					if s.Dropped["full"] != uint64(len(huge)) {
						t.Fatalf("refused records counted as full: %d, want %d", s.Dropped["full"], len(huge))
					}
				})
			}
		})
	}
}
