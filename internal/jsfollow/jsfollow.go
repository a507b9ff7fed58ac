// Package jsfollow follows messages on a stream into a replica's memory with an ordered consumer
// that the loss of its node does not stall.
//
// An ordered consumer has one replica, in memory, on one node. When that node goes away the client
// is told only if it was connected to it; otherwise nats.go's ordered consumer notices after two
// missed idle heartbeats (10 s), and the replica's view lagged the stream that long. So a Follower
// also makes its consumer again itself, after the last message it handed: at once when the
// consumer's server reports that it shuts down, and when the last message on the subject (one direct
// get every Check) is still not handed Grace later while nothing else was (a node that crashed or was
// cut off says nothing).
package jsfollow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// Check is how often a follower reads the last message on its subject.
	Check = time.Second
	// Grace is how long that message may take to arrive before the consumer is replaced.
	Grace = 200 * time.Millisecond
)

// Config names what to follow and how.
type Config struct {
	Stream  jetstream.Stream
	Subject string // the filter; wildcards allowed
	// LastPerSubject starts with the last message of each subject (a KV bucket's or a state's
	// current value) rather than with the first message on the stream.
	LastPerSubject bool
	Pull           []jetstream.PullConsumeOpt // e.g. PullMaxBytes for large messages
	What           string                     // what is followed, for the logs: "rules changes"
	Log            *slog.Logger
	Refollows      *atomic.Uint64 // counts new consumers made (its server went away, or it lagged); may be nil
	// Unreadable is called for a message without JetStream metadata (skipped); may be nil.
	Unreadable func(jetstream.Msg, error)
}

// Follower hands every message on its subject to one function, once and in order, on one goroutine
// at a time, until Stop.
type Follower struct {
	cfg    Config
	fn     func(jetstream.Msg, *jetstream.MsgMetadata)
	ctx    context.Context // cancelled by Stop
	cancel context.CancelFunc
	lost   chan struct{} // the consumer's server shut down

	mu     sync.Mutex // serialises the handler: fn, seen
	seen   uint64     // stream sequence of the last message handed (or skipped as unreadable)
	last   uint64     // the last message on the subject when following started
	loaded chan struct{}
	done   bool // loaded is closed
	cc     jetstream.ConsumeContext
	cons   jetstream.Consumer

	wg  sync.WaitGroup // the watch goroutine
	old sync.WaitGroup // consumers being stopped
}

// Follow starts following: it makes the consumer (trying again until ctx is done: on a busy
// cluster, with a stream leader just elected, one API timeout can pass unanswered) and returns.
// Loaded tells when the messages on the subject at the start are handed.
func Follow(ctx context.Context, cfg Config, fn func(jetstream.Msg, *jetstream.MsgMetadata)) (*Follower, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	fctx, cancel := context.WithCancel(context.Background())
	f := &Follower{cfg: cfg, fn: fn, ctx: fctx, cancel: cancel, lost: make(chan struct{}, 1), loaded: make(chan struct{})}
	for {
		err := f.start(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			cancel()
			return nil, fmt.Errorf("follow %s: %w", cfg.Subject, err)
		}
		cfg.Log.Warn("following "+cfg.What+": creating the consumer failed, retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond): // a pause between attempts
		}
	}
	f.mu.Lock()
	if ci := f.cons.CachedInfo(); f.last == 0 || ci != nil && ci.NumPending == 0 {
		f.loadedLocked()
	}
	f.mu.Unlock()
	f.wg.Go(f.watch)
	return f, nil
}

// start reads the last message on the subject and makes the first consumer.
func (f *Follower) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var last uint64
	m, err := f.cfg.Stream.GetLastMsgForSubject(ctx, f.cfg.Subject)
	switch {
	case err == nil:
		last = m.Sequence
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return err
	}
	f.mu.Lock()
	f.last = last
	f.mu.Unlock()
	return f.consume(ctx)
}

// Loaded is closed once the messages on the subject when Follow started are handed (or, the last of
// them gone meanwhile, once a message leaves nothing pending).
func (f *Follower) Loaded() <-chan struct{} { return f.loaded }

// Stop ends following and waits for the function to return.
func (f *Follower) Stop() {
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	cc := f.cc
	f.mu.Unlock()
	cc.Stop()
	<-cc.Closed()
	f.old.Wait()
}

func (f *Follower) loadedLocked() {
	if !f.done {
		f.done = true
		close(f.loaded)
	}
}

// consume starts a consumer after the last message handed (the start when none was).
func (f *Follower) consume(ctx context.Context) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{f.cfg.Subject}}
	if f.cfg.LastPerSubject {
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	}
	f.mu.Lock()
	if f.seen > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.seen+1
	}
	f.mu.Unlock()
	cons, err := f.cfg.Stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	opts := append([]jetstream.PullConsumeOpt{jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer recovers by itself from the rest; not from this before 10 s.
		f.cfg.Log.Debug("following "+f.cfg.What, "err", err)
		if errors.Is(err, jetstream.ErrServerShutdown) {
			select {
			case f.lost <- struct{}{}:
			default:
			}
		}
	})}, f.cfg.Pull...)
	cc, err := cons.Consume(f.handle, opts...)
	if err != nil {
		return err
	}
	f.mu.Lock()
	old, oldCons := f.cc, f.cons
	f.cc, f.cons = cc, cons
	f.mu.Unlock()
	if old != nil {
		// Its messages are filtered by seen; stopping it can wait for its own reset to end. Its
		// consumer on the server would linger 5 minutes (inactive threshold): deleted.
		f.old.Go(func() {
			old.Stop()
			<-old.Closed()
			if ci := oldCons.CachedInfo(); ci != nil {
				ctx, cancel := context.WithTimeout(f.ctx, 2*time.Second)
				defer cancel()
				_ = f.cfg.Stream.DeleteConsumer(ctx, ci.Name) // best effort: it expires anyway
			}
		})
	}
	return nil
}

// handle hands a message once, in order, whichever consumer delivered it.
func (f *Follower) handle(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		if f.cfg.Unreadable != nil {
			f.cfg.Unreadable(m, err)
		}
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	seq := md.Sequence.Stream
	if seq <= f.seen {
		return // handed already, by the consumer this one replaced
	}
	f.seen = seq
	f.fn(m, md)
	if seq >= f.last || md.NumPending == 0 {
		f.loadedLocked()
	}
}

// watch makes a new consumer when the current one's server shuts down or it lags the stream.
func (f *Follower) watch() {
	tick := time.NewTicker(Check)
	defer tick.Stop()
	for {
		var why string
		select {
		case <-f.ctx.Done():
			return
		case <-f.lost:
			why = "the consumer's server shut down"
		case <-tick.C:
			if why = f.lagging(); why == "" {
				continue
			}
		}
		if f.cfg.Refollows != nil {
			f.cfg.Refollows.Add(1)
		}
		f.cfg.Log.Info("following "+f.cfg.What+": making a new consumer", "why", why)
		// A create sent while a node shuts down can go unanswered (placed on it, or lost with it)
		// where one sent a moment later is answered in milliseconds: short timeouts at first.
		for timeout := Check / 4; ; timeout = min(2*timeout, 5*time.Second) {
			ctx, cancel := context.WithTimeout(f.ctx, timeout)
			err := f.consume(ctx)
			cancel()
			if err == nil {
				break
			}
			f.cfg.Log.Warn("following "+f.cfg.What+": making a new consumer failed, retrying", "err", err)
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond): // a pause between attempts
			}
		}
	}
}

// lagging names a message on the stream not handed within Grace while nothing else was ("": none).
func (f *Follower) lagging() string {
	ctx, cancel := context.WithTimeout(f.ctx, Check)
	defer cancel()
	m, err := f.cfg.Stream.GetLastMsgForSubject(ctx, f.cfg.Subject)
	if err != nil {
		return "" // none yet, or the stream cannot answer now: checked again next time
	}
	seen := func() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.seen }
	before := seen()
	if before >= m.Sequence {
		return ""
	}
	select { // it may be on its way
	case <-f.ctx.Done():
		return ""
	case <-time.After(Grace):
	}
	// A consumer still handing messages is alive, only behind (a busy stream, a slow function).
	if now := seen(); now >= m.Sequence || now != before {
		return ""
	}
	return fmt.Sprintf("message %d on the stream was not delivered", m.Sequence)
}
