package backtest

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/signal"
)

// Kinds of replayed input.
const (
	kindFeature = iota + 1
	kindSale
	kindSnapshot
)

// item is one input at its event time: a feature record (the window's end), a sale or an
// inventory count (their time).
type item struct {
	t    time.Time
	kind int
	src  int       // which source, for a stable order among equal times
	seq  uint64    // stream sequence
	recv time.Time // when the stream stored it: the hub's clock when it read it, as closely as known
	ord  int       // position in its message
	h    *signal.Header
	f    *signal.Feature
	sale commerce.Sale
	snap commerce.Snapshot
	// future: dated beyond its source's max_future of recv (it moves no watermark).
	future bool
}

// beyond reports whether the item is dated more than d after it was stored: the hub, reading it
// then, refuses it (an agent's clock ahead, a mistyped date).
func (it *item) beyond(d time.Duration) bool {
	return !it.recv.IsZero() && it.t.After(it.recv.Add(d))
}

// source reads one stream with an ordered consumer from a start time (stream time) and decodes
// each message into items. It stops at the stream's end when it started, or once its event time
// is past stop (what arrives later is of no use to the replay: it is after To and the reorder
// window).
type source struct {
	name   string
	stream string
	filter []string
	start  time.Time
	batch  int
	decode func(m jetstream.Msg, seq uint64, out []item) ([]item, error)
	// ahead is how far past the time it was stored an item may be dated and still be used by the
	// hub (max_future): a later one is refused when applied and moves no watermark.
	ahead time.Duration

	// gone is when the oldest message the stream still holds was stored, when its retention
	// removed messages stored after start (zero otherwise); oldest is the earliest event time read.
	gone, oldest time.Time

	bad     int // messages that do not decode (the hub terminates them too)
	badLog  func(subject string, seq uint64, err error)
	lastSeq uint64
}

// run sends the items of each fetched batch on out, in stream order, and closes it at the end.
// An error ends the replay.
func (s *source) run(ctx context.Context, js jetstream.JetStream, stop func() time.Time, out chan<- []item) error {
	defer close(out)
	st, err := js.Stream(ctx, s.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // nothing to replay (no agent or commerce event ever published)
	}
	if err != nil {
		return fmt.Errorf("%s stream %s: %w", s.name, s.stream, err)
	}
	s.lastSeq = st.CachedInfo().State.LastSeq
	if info := st.CachedInfo().State; info.FirstSeq > 1 && info.FirstTime.After(s.start) {
		s.gone = info.FirstTime.UTC()
	}
	if s.lastSeq == 0 || st.CachedInfo().State.LastTime.Before(s.start) {
		return nil // nothing stored since start
	}
	start := s.start
	cons, err := js.OrderedConsumer(ctx, s.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: s.filter, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	})
	if err != nil {
		return fmt.Errorf("%s stream %s: ordered consumer: %w", s.name, s.stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(s.batch))
	if err != nil {
		return fmt.Errorf("%s stream %s: %w", s.name, s.stream, err)
	}
	defer it.Stop()
	// Next waits without a context: stopping the iterator is what ends a wait when ctx ends.
	defer context.AfterFunc(ctx, it.Stop)()
	var wm time.Time
	var items []item
	send := func() error {
		if len(items) == 0 {
			return nil
		}
		select {
		case out <- items:
			items = nil
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for ctx.Err() == nil {
		m, err := it.Next(jetstream.NextMaxWait(idleEnd))
		if errors.Is(err, nats.ErrTimeout) {
			// Nothing more to deliver (a stream with messages after start, none on the filter).
			return send()
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s stream %s: %w", s.name, s.stream, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("%s stream %s: message without metadata: %w", s.name, s.stream, err)
		}
		seq := meta.Sequence.Stream
		before := len(items)
		if items, err = s.decode(m, seq, items); err != nil {
			s.bad++
			if s.badLog != nil {
				s.badLog(m.Subject(), seq, err)
			}
			items = items[:before]
		}
		for i := before; i < len(items); i++ {
			items[i].recv = meta.Timestamp
			if items[i].beyond(s.ahead) {
				items[i].future = true // refused when applied; a wrong clock must not end the read
				continue
			}
			if items[i].t.After(wm) {
				wm = items[i].t
			}
			if s.oldest.IsZero() || items[i].t.Before(s.oldest) {
				s.oldest = items[i].t
			}
		}
		// What arrives from here on arrived after the backtest started, or is past the span.
		if seq >= s.lastSeq || meta.NumPending == 0 || wm.After(stop()) {
			return send()
		}
		if len(items) >= sendItems {
			if err := send(); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// sendItems is how many items a source hands the merger at once.
const sendItems = 1024

// idleEnd: an ordered consumer that delivers nothing for this long has nothing left to deliver.
const idleEnd = 2 * time.Second

// featureDecoder decodes the agents' features envelopes as the hub's agents ingest does (the
// envelope must belong on its subject).
func featureDecoder(prefix string, src int) func(jetstream.Msg, uint64, []item) ([]item, error) {
	return func(m jetstream.Msg, seq uint64, out []item) ([]item, error) {
		b, err := signal.DecodeBatch(m.Data())
		if err != nil {
			return out, err
		}
		if want := signal.Subject(prefix, b.Site, b.Agent, b.Stream); m.Subject() != want {
			return out, fmt.Errorf("envelope of agent %q site %q stream %s arrived on subject %s", b.Agent, b.Site, b.Stream, m.Subject())
		}
		if b.Stream != signal.StreamFeatures {
			return out, nil
		}
		h := &b.Header
		for i := range b.Features {
			f := &b.Features[i]
			out = append(out, item{t: f.WindowEnd.UTC(), kind: kindFeature, src: src, seq: seq, ord: i, h: h, f: f})
		}
		return out, nil
	}
}

// commerceDecoder decodes the COMMERCE stream's sales and inventory rows as the hub's commerce
// consumer does.
func commerceDecoder(src int) func(jetstream.Msg, uint64, []item) ([]item, error) {
	return func(m jetstream.Msg, seq uint64, out []item) ([]item, error) {
		subj := m.Subject()
		switch {
		case strings.HasSuffix(subj, ".commerce.inventory"):
			s, err := commerce.DecodeSnapshot(m.Data())
			if err != nil {
				return out, err
			}
			return append(out, item{t: s.Time.UTC(), kind: kindSnapshot, src: src, seq: seq, snap: s}), nil
		case strings.Contains(subj, ".commerce.sales."):
			s, err := commerce.DecodeSale(subj, m.Data())
			if err != nil {
				return out, err
			}
			return append(out, item{t: s.Time.UTC(), kind: kindSale, src: src, seq: seq, sale: s}), nil
		}
		return out, fmt.Errorf("subject %s is neither <prefix>.commerce.sales.<channel> nor <prefix>.commerce.inventory", subj)
	}
}

// merger merges the sources' items in event-time order. Each source is in stream order, which is
// event order only roughly (agents interleave, a late batch arrives late): an item is released
// once every source still reading has reached its time plus the reorder window. An item later
// than that still comes out, after items of later times: it is applied late, as the hub would.
type merger struct {
	in      []<-chan []item
	wm      []time.Time // latest event time read from each source
	done    []bool
	reorder time.Duration
	h       itemHeap
}

func newMerger(reorder time.Duration, in ...<-chan []item) *merger {
	return &merger{in: in, wm: make([]time.Time, len(in)), done: make([]bool, len(in)), reorder: reorder}
}

// next returns the next item in event-time order; ok is false at the end.
func (m *merger) next(ctx context.Context) (item, bool, error) {
	for {
		// The source furthest behind decides what is safe to release.
		lag := -1
		for i := range m.in {
			if !m.done[i] && (lag < 0 || m.wm[i].Before(m.wm[lag])) {
				lag = i
			}
		}
		if m.h.Len() > 0 && (lag < 0 || !m.h[0].t.After(m.wm[lag].Add(-m.reorder))) {
			return heap.Pop(&m.h).(item), true, nil
		}
		if lag < 0 {
			return item{}, false, nil
		}
		select {
		case items, ok := <-m.in[lag]:
			if !ok {
				m.done[lag] = true
				continue
			}
			for _, it := range items {
				if !it.future && it.t.After(m.wm[lag]) {
					m.wm[lag] = it.t
				}
				heap.Push(&m.h, it)
			}
		case <-ctx.Done():
			return item{}, false, ctx.Err()
		}
	}
}

// itemHeap orders items by event time, then source, stream sequence and position (a total order:
// the same history replays the same way).
type itemHeap []item

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(i, j int) bool {
	a, b := &h[i], &h[j]
	if !a.t.Equal(b.t) {
		return a.t.Before(b.t)
	}
	if a.src != b.src {
		return a.src < b.src
	}
	if a.seq != b.seq {
		return a.seq < b.seq
	}
	return a.ord < b.ord
}
func (h itemHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)   { *h = append(*h, x.(item)) }
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = item{}
	*h = old[:len(old)-1]
	return it
}

// earliestLastCount reads the ERP counts (the COMMERCE stream's inventory subject) from the
// warm-up's start and returns the earliest of the last counts before From of each SKU × site
// (zero: none): the positions at From count the production since then.
func (r *replay) earliestLastCount(ctx context.Context, js jetstream.JetStream) (time.Time, error) {
	cfg := r.o.Config
	subj := commerce.InventorySubject(cfg.Commerce.Prefix)
	s := &source{name: "commerce", stream: cfg.Commerce.Stream, filter: []string{subj},
		start: r.o.From.Add(-r.o.warmup()), batch: 512, decode: commerceDecoder(1), ahead: cfg.Inventory.MaxFuture}
	st, err := js.Stream(ctx, s.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("commerce stream %s: %w", s.stream, err)
	}
	// Without a count stored since the start, the read would wait idleEnd for nothing.
	last, err := st.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("commerce stream %s: last count: %w", s.stream, err)
	}
	if last.Time.Before(s.start) {
		return time.Time{}, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan []item, 4)
	errc := make(chan error, 1)
	go func() { errc <- s.run(ctx, js, func() time.Time { return r.o.From }, ch) }()
	counts := map[[2]string]time.Time{}
	for items := range ch {
		for _, it := range items {
			if it.kind == kindSnapshot && !it.future && it.t.Before(r.o.From) {
				if k := [2]string{it.snap.SKU, it.snap.Site}; it.t.After(counts[k]) {
					counts[k] = it.t
				}
			}
		}
	}
	if err := <-errc; err != nil {
		return time.Time{}, err
	}
	var first time.Time
	for _, t := range counts {
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	return first, nil
}
