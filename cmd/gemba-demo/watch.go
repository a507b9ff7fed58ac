package main

import (
	"context"
	"errors"
	"fmt"
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

func newWatcher(url, site, agentID string) (*watcher, error) {
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
	w := &watcher{nc: nc, js: js, stream: "GEMBA", subject: "gemba." + site + "." + agentID + ".>",
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

// Samples is the number of samples seen in the stream so far.
func (w *watcher) Samples() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples
}

// Summary renders a few of the latest features.
func (w *watcher) Summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	pick := map[string]gsignal.Feature{}
	for k, f := range w.latest {
		switch f.Name {
		case "availability", "units_produced", "delta", "mean":
			if f.Name == "mean" && f.Signal != "line1.press.temperature" {
				continue
			}
			pick[k] = f
		}
	}
	return featureLine(pick)
}

// CountStream reads every samples message of this agent from the start of the stream and returns
// the number of samples, and the number counted once per message id.
func (w *watcher) CountStream() (total, unique uint64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	subj := w.subject[:len(w.subject)-1] + "samples"
	cons, err := w.js.OrderedConsumer(ctx, w.stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return 0, 0, err
	}
	seen := map[string]bool{}
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return 0, 0, err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			b, err := gsignal.DecodeBatch(msg.Data())
			if err != nil {
				return 0, 0, fmt.Errorf("undecodable message: %w", err)
			}
			id := gsignal.MsgID(b.Agent, b.Stream, b.FirstSeq)
			total += uint64(len(b.Samples))
			if !seen[id] {
				seen[id] = true
				unique += uint64(len(b.Samples))
			}
		}
		if n == 0 {
			return total, unique, nil
		}
	}
}

func (w *watcher) Close() {
	w.cancel()
	w.wg.Wait()
	w.nc.Close()
}
