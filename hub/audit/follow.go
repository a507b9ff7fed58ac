package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A follower's consumer (an ordered consumer: one replica, in memory) lives on one node. When that
// node goes away the client is told only if it was connected to it; otherwise the ordered consumer
// notices after two missed idle heartbeats (10 s), and a rollback reached that replica 10 s late.
// So the follower also makes its consumer again itself: at once when the consumer's server reports
// that it shuts down, and when the last change on the stream (one direct get every followCheck) is
// still not handed followGrace later.
const (
	followCheck = time.Second
	followGrace = 200 * time.Millisecond
)

// FollowChanges calls fn with the current rules state, then with every new change, in order, on
// one goroutine at a time. It follows through a server restart or a leader change: the ordered
// consumer resumes after the last change it handed, and the follower makes a new one when the
// consumer's server shuts down or a change on the stream is not delivered (checked every second).
// stop ends it and waits for fn to return.
func (l *Log) FollowChanges(fn func(Change)) (stop func(), err error) {
	f, err := l.follow(fn)
	if err != nil {
		return nil, err
	}
	return f.stop, nil
}

func (l *Log) follow(fn func(Change)) (*follower, error) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{l: l, fn: fn, ctx: ctx, cancel: cancel, lost: make(chan struct{}, 1)}
	// Creating the consumer can outlast one API timeout on a busy cluster (a stream leader just
	// elected): a replica that cannot follow the rules cannot decide, so it tries for a while.
	for deadline := time.Now().Add(time.Minute); ; {
		err := f.consume(10 * time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			return nil, fmt.Errorf("audit: follow %s: %w", l.cfg.RulesSubject(), err)
		}
		l.log.Warn("following rules changes: creating the consumer failed, retrying", "err", err)
		time.Sleep(250 * time.Millisecond) // a pause between attempts, not synchronisation
	}
	f.wg.Go(f.watch)
	return f, nil
}

type follower struct {
	l      *Log
	fn     func(Change)
	ctx    context.Context // cancelled by stop
	cancel context.CancelFunc
	lost   chan struct{} // the consumer's server shut down

	mu   sync.Mutex // serialises the handler: fn, seen
	seen uint64     // stream sequence of the last rules message handed (or skipped as malformed)
	cc   jetstream.ConsumeContext
	cons jetstream.Consumer

	wg  sync.WaitGroup // the watch goroutine
	old sync.WaitGroup // consumers being stopped
}

func (f *follower) stop() {
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	cc := f.cc
	f.mu.Unlock()
	cc.Stop()
	<-cc.Closed()
	f.old.Wait()
}

// consume starts a consumer after the last message handed (the current state when none was).
func (f *follower) consume(timeout time.Duration) error {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{f.l.cfg.RulesSubject()}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
	}
	f.mu.Lock()
	if f.seen > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.seen+1
	}
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(f.ctx, timeout)
	defer cancel()
	cons, err := f.l.js.OrderedConsumer(ctx, f.l.cfg.Stream, cfg)
	if err != nil {
		return err
	}
	cc, err := cons.Consume(f.handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer recovers by itself from the rest; not from this before 10 s.
		f.l.log.Debug("following rules changes", "err", err)
		if errors.Is(err, jetstream.ErrServerShutdown) {
			select {
			case f.lost <- struct{}{}:
			default:
			}
		}
	}))
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
				_ = f.l.js.DeleteConsumer(ctx, f.l.cfg.Stream, ci.Name) // best effort: it expires anyway
			}
		})
	}
	return nil
}

// handle hands a rules message once, in order, whichever consumer delivered it.
func (f *follower) handle(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		f.l.malformed(m.Subject(), 0, err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	seq := md.Sequence.Stream
	if seq <= f.seen {
		return // handed already, by the consumer this one replaced
	}
	f.seen = seq
	c, err := decodeChange(m.Data(), seq)
	if err != nil {
		f.l.malformed(m.Subject(), seq, err)
		return
	}
	f.fn(c)
}

// watch makes a new consumer when the current one's server shuts down or it lags the stream.
func (f *follower) watch() {
	tick := time.NewTicker(followCheck)
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
		f.l.Stats.Refollows.Add(1)
		f.l.log.Info("following rules changes: making a new consumer", "why", why)
		// A create sent while a node shuts down can go unanswered (placed on it, or lost with it)
		// where one sent a moment later is answered in milliseconds: short timeouts at first.
		for timeout := followCheck / 4; ; timeout = min(2*timeout, 5*time.Second) {
			err := f.consume(timeout)
			if err == nil {
				break
			}
			f.l.log.Warn("following rules changes: making a new consumer failed, retrying", "err", err)
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond): // a pause between attempts
			}
		}
	}
}

// lagging names a change on the stream not handed within followGrace ("": none).
func (f *follower) lagging() string {
	ctx, cancel := context.WithTimeout(f.ctx, followCheck)
	defer cancel()
	m, err := f.l.stream.GetLastMsgForSubject(ctx, f.l.cfg.RulesSubject())
	if err != nil {
		return "" // none yet, or the stream cannot answer now: checked again next time
	}
	behind := func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.seen < m.Sequence }
	if !behind() {
		return ""
	}
	select { // it may be on its way
	case <-f.ctx.Done():
		return ""
	case <-time.After(followGrace):
	}
	if !behind() {
		return ""
	}
	return fmt.Sprintf("change %d on the stream was not delivered", m.Sequence)
}
