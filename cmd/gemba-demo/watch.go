package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	gsignal "github.com/gemba-io/gemba/signal"
)

// watcher plays the hub: it follows the agent's subjects in JetStream and keeps the latest features.
type watcher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  string
	subject string
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	samples uint64
	latest  map[string]gsignal.Feature
}

func newWatcher(url, stream, subject string) (*watcher, error) {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{nc: nc, js: js, stream: stream, subject: subject,
		cancel: cancel, latest: map[string]gsignal.Feature{}}
	w.wg.Add(1)
	go w.follow(ctx)
	return w, nil
}

// follow consumes the agent's subjects with an ordered consumer, recreating it after outages.
func (w *watcher) follow(ctx context.Context) {
	defer w.wg.Done()
	var lastSeq uint64
	for ctx.Err() == nil {
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{w.subject}}
		if lastSeq > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, lastSeq+1
		}
		cons, err := w.js.OrderedConsumer(ctx, w.stream, cfg)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		for ctx.Err() == nil {
			batch, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				break
			}
			for msg := range batch.Messages() {
				if md, err := msg.Metadata(); err == nil {
					lastSeq = md.Sequence.Stream
				}
				w.handle(msg.Data())
			}
			if batch.Error() != nil && !errors.Is(batch.Error(), nats.ErrTimeout) {
				break
			}
		}
	}
}

func (w *watcher) handle(data []byte) {
	b, err := gsignal.DecodeBatch(data)
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch b.Stream {
	case gsignal.StreamSamples:
		w.samples += uint64(len(b.Samples))
	case gsignal.StreamFeatures:
		for _, f := range b.Features {
			key := f.Signal + ":" + f.Name
			for _, l := range f.Labels {
				key += "{" + l.Value + "}"
			}
			w.latest[key] = f
		}
	}
}

// Samples is the number of samples seen in the stream so far (a replay counts twice).
func (w *watcher) Samples() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples
}

// Lines renders the latest features of each line: units per SKU at the pack station, availability
// per machine, and the press temperature statistics.
func (w *watcher) Lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	type line struct {
		units, avail []string
		temp         string
	}
	lines := map[string]*line{}
	get := func(sig string) *line {
		name, _, _ := strings.Cut(sig, ".")
		if lines[name] == nil {
			lines[name] = &line{}
		}
		return lines[name]
	}
	keys := make([]string, 0, len(w.latest))
	for k := range w.latest {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := w.latest[k]
		parts := strings.Split(f.Signal, ".")
		if len(parts) != 3 {
			continue
		}
		l := get(f.Signal)
		switch {
		case f.Name == "units" && len(f.Labels) > 0:
			l.units = append(l.units, fmt.Sprintf("%s=%.0f", f.Labels[0].Value, f.Value))
		case f.Name == "availability":
			l.avail = append(l.avail, fmt.Sprintf("%s %.0f%%", parts[1], f.Value*100))
		case f.Name == "mean" && parts[1] == "press" && parts[2] == "temperature":
			mn, mx := w.latest[f.Signal+":min"], w.latest[f.Signal+":max"]
			l.temp = fmt.Sprintf("press temp %.1f (%.1f..%.1f)", f.Value, mn.Value, mx.Value)
		}
	}
	names := make([]string, 0, len(lines))
	for n := range lines {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		l := lines[n]
		out = append(out, fmt.Sprintf("%s  units/10s %-24s availability %-32s %s", n, strings.Join(l.units, " "), strings.Join(l.avail, ", "), l.temp))
	}
	return out
}

func (w *watcher) Close() {
	w.cancel()
	w.wg.Wait()
	w.nc.Close()
}
