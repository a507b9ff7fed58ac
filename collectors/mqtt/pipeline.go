package mqtt

// The message pipeline: paho's router goroutine queues (receive, in collector.go), the worker maps
// batches, the committer makes them durable and acknowledges them, the watchdog looks for silence.

import (
	"context"
	"runtime/debug"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/signal"
)

// worker maps queued messages into a job and hands the job to the committer, which makes its
// samples durable with one Emit and then acknowledges the messages in arrival order. The job
// grows for as long as the committer is busy with the previous one (up to max_batch messages), so
// a batch is exactly what arrived during one durable write: no timer, no extra wait when idle, and
// mapping overlaps writing.
func (c *Collector) worker(ctx context.Context, emit collectors.Emitter, queue <-chan inMsg, reset func(string)) {
	jobs := make(chan commitJob) // unbuffered: a job leaves only when the committer is free
	// Two sets of job buffers circulate between the stages: bounded memory, no allocation per batch.
	free := make(chan jobBufs, 2)
	free <- jobBufs{}
	free <- jobBufs{}
	var committer sync.WaitGroup
	committer.Go(func() { c.commit(ctx, emit, jobs, free, reset) })
	var job commitJob
	open := false      // job holds a sample buffer taken from free
	spGen := uint64(0) // the session generation the Sparkplug state was last restored for
	defer func() {
		close(jobs)
		committer.Wait()
		if open {
			c.acked.release(job.digests)
		}
	}()
	for {
		in, out := queue, chan<- commitJob(nil)
		if open && job.messages >= c.cfg.MaxBatch {
			in = nil // full: wait for the committer
		}
		if open && job.messages > 0 {
			out = jobs
		}
		select {
		case m := <-in:
			c.queued.Add(-1)
			if cur := c.gen.Load(); m.gen == cur && spGen != cur {
				// A new session: what the batches of the old one did to the Sparkplug state
				// (births, deaths) was not stored unless they were committed, and the broker
				// resends the rest in order. Start from the committed state, once the committer
				// is done with the old session's batches.
				if !c.settleCommitter(ctx, free, open) {
					return
				}
				c.restoreSparkplug()
				spGen = cur
			}
			if !open {
				select {
				case bufs := <-free:
					job.samples, job.seen, job.digests = bufs.samples, bufs.seen, bufs.digests
				case <-ctx.Done():
					return
				}
				job.gen, open = c.gen.Load(), true
			}
			c.addMessage(&job, m)
		case out <- job:
			job, open = commitJob{}, false
		case <-ctx.Done():
			return
		}
	}
}

// settleCommitter waits until the committer has finished every job handed to it: then both job
// buffers are back (one of them in the worker's open job).
func (c *Collector) settleCommitter(ctx context.Context, free chan jobBufs, open bool) bool {
	if !slices.ContainsFunc(c.sp, func(h *spHost) bool { return h != nil }) {
		return true
	}
	var held []jobBufs
	defer func() {
		for _, b := range held {
			free <- b
		}
	}()
	for n := 2 - btoi(open); len(held) < n; {
		select {
		case b := <-free:
			held = append(held, b)
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// restoreSparkplug sets every Sparkplug subscription's state back to what was committed.
func (c *Collector) restoreSparkplug() {
	for i, h := range c.sp {
		if h == nil {
			continue
		}
		if err := c.subs[i].restoreSparkplug(h, h.committed); err != nil {
			c.log.Warn("sparkplug state", "subscription", c.subs[i].filter, "err", err)
		}
	}
}

// addMessage maps one message into job.
func (c *Collector) addMessage(job *commitJob, in inMsg) {
	cur := c.gen.Load()
	if in.gen != cur {
		return // from a session we reset: the broker redelivers it
	}
	if job.gen != cur {
		// The session was reset while this job filled: what it holds is redelivered.
		c.acked.release(job.digests)
		clear(job.samples)
		*job = commitJob{gen: cur, samples: job.samples[:0], seen: job.seen[:0], digests: job.digests[:0]}
	}
	job.messages++
	if in.msg.Qos() > 0 {
		job.acks = append(job.acks, in.msg)
		d := messageDigest(in.msg)
		if c.acked.seen(in.msg, d, cur) {
			c.m.redelivered.Inc()
			if len(in.match) > 0 {
				// Stored before, maybe by a process that crashed before it saved the retained digests
				// (retained.go): a topic without a digest gets this one, so the retained copy that
				// the next subscribe brings is not stored again either.
				job.seen = append(job.seen, seenMsg{topic: in.msg.Topic(), digest: payloadDigest(in.msg.Payload()), redelivered: true, lo: len(job.samples), hi: len(job.samples)})
			}
			return // the broker missed our PUBACK
		}
		job.digests = append(job.digests, d)
		c.acked.hold(d, cur)
	}
	n := len(job.samples)
	job.samples = c.mapMessage(job.samples, in)
	if len(in.match) > 0 {
		retained := in.msg.Retained()
		job.seen = append(job.seen, seenMsg{topic: in.msg.Topic(), digest: payloadDigest(in.msg.Payload()), retained: retained, lo: n, hi: len(job.samples)})
		if retained {
			// A last-known value, not a fresh reading: say so to the hub. Labels may be shared
			// between samples (cached per topic), so each gets its own copy.
			for k := n; k < len(job.samples); k++ {
				smp := &job.samples[k]
				smp.Labels = append(append(make(signal.Labels, 0, len(smp.Labels)+1), smp.Labels...), signal.Label{Key: retainedLabelKey, Value: "true"})
			}
		}
	}
	for _, i := range in.match {
		if h := c.sp[i]; h != nil {
			c.afterSparkplug(job, i, h)
		}
	}
}

// afterSparkplug does what a Sparkplug message may have asked for: the birth state to save with
// the job (before its acknowledgements), and rebirth requests to send.
func (c *Collector) afterSparkplug(job *commitJob, i int, h *spHost) {
	filter := c.subs[i].filter
	if h.dirty {
		if data, err := h.snapshot(filter); err != nil {
			c.log.Warn("sparkplug state", "subscription", filter, "err", err)
		} else {
			w := fileWrite{sub: i, data: data}
			if c.stateDir != "" {
				w.path = spStatePath(c.stateDir, filter)
			}
			if k := slices.IndexFunc(job.state, func(f fileWrite) bool { return f.sub == w.sub }); k >= 0 {
				job.state[k] = w // a later birth in the same batch supersedes
			} else {
				job.state = append(job.state, w)
			}
		}
	}
	if len(h.pending) == 0 {
		return
	}
	ref := c.client.Load()
	for _, k := range h.pending {
		payload, err := rebirthPayload(time.Now())
		if err != nil || ref == nil {
			continue
		}
		topic := spNamespace + "/" + k.group + "/NCMD/" + k.node
		ref.cl.Publish(topic, 0, false, payload) // QoS 0 and not awaited: a lost request is retried on the next gap
		c.m.rebirths.WithLabelValues(filter).Inc()
		c.log.Info("sparkplug rebirth requested", "group", k.group, "node", k.node)
	}
	h.pending = h.pending[:0]
}

// commitJob is one mapped batch on its way to the buffer.
type commitJob struct {
	gen      uint64
	messages int
	samples  []signal.Sample
	acks     []paho.Message // QoS >= 1 messages in arrival order
	state    []fileWrite    // Sparkplug births to save before acknowledging
	seen     []seenMsg      // mapped messages, for the retained-message dedup (retained.go)
	digests  []uint64       // of the QoS >= 1 messages to store, journaled with the samples (stored.go)
}

// jobBufs are a job's reusable slices, returned by the committer.
type jobBufs struct {
	samples []signal.Sample
	seen    []seenMsg
	digests []uint64
}

// fileWrite is the Sparkplug state of subscription sub after a job: kept in memory as the
// committed state (spHost.committed) and, with a data dir, saved at path.
type fileWrite struct {
	sub  int
	path string
	data []byte
}

// crashPoint, when set (by tests only, before any collector runs), is called after each durable
// batch and before its acknowledgements: the moment a crash makes the broker redeliver what was
// stored.
var crashPoint func()

// commit runs the durable half of the pipeline: Emit, save state, acknowledge, in job order.
func (c *Collector) commit(ctx context.Context, emit collectors.Emitter, jobs <-chan commitJob, free chan<- jobBufs, reset func(string)) {
	var updates []retainedEntry
	var undo []undoEntry
	me, _ := emit.(metaEmitter)
	for job := range jobs {
		ok := job.gen == c.gen.Load() && ctx.Err() == nil
		updates, undo = updates[:0], undo[:0]
		if ok {
			updates, undo = c.dedupRetained(&job, updates, undo)
		}
		if ok && len(job.samples) > 0 {
			var meta []buffer.Meta
			journaled := 0
			if me != nil {
				meta, journaled = c.stored.prepare(job.digests)
			}
			c.busy.Store(true)
			var err error
			if len(meta) > 0 {
				err = me.EmitMeta(ctx, job.samples, meta)
			} else {
				err = emit.Emit(ctx, job.samples)
			}
			c.busy.Store(false)
			if err == nil {
				c.stored.commit(journaled)
			}
			if err != nil {
				ok = false
				c.rollbackRetained(undo)
				if ctx.Err() == nil {
					c.m.emitErrors.Inc()
					c.log.Error("emit failed; messages not acknowledged", "messages", job.messages, "err", err)
					// The broker resends unacknowledged messages only on a new connection; batches
					// mapped meanwhile belong to the old one and are dropped with it.
					c.gen.Add(1)
					reset("buffer refused samples: " + err.Error())
				}
			}
		}
		if ok {
			if crashPoint != nil && len(job.samples) > 0 {
				crashPoint() // tests: die with the batch durable and not acknowledged
			}
			c.acked.add(job.digests) // before the PUBACKs: a redelivery may follow at once
			for _, w := range job.state {
				c.sp[w.sub].committed = w.data
				if w.path == "" {
					continue
				}
				if err := writeFileAtomic(w.path, w.data); err != nil {
					c.log.Warn("save sparkplug state", "err", err)
				}
			}
			if err := c.ret.commit(updates); err != nil {
				// The samples are durable: acknowledge them. Only the dedup state is behind, so a
				// retained message may be stored again after a restart.
				c.warn.Warn("retained-state", "save retained state", "err", err)
			}
			for _, m := range job.acks {
				m.Ack()
			}
			c.m.acks.Add(float64(len(job.acks)))
		} else {
			c.acked.release(job.digests)
		}
		clear(job.samples) // drop references to label slices and strings
		clear(job.seen)
		clear(updates)
		clear(undo)
		free <- jobBufs{samples: job.samples[:0], seen: job.seen[:0], digests: job.digests[:0]}
	}
}

// mapMessage appends the samples of one message for every subscription it matched.
func (c *Collector) mapMessage(dst []signal.Sample, in inMsg) []signal.Sample {
	topic := in.msg.Topic()
	if len(in.match) == 0 {
		c.m.unmatched.Inc()
		return dst
	}
	payload := in.msg.Payload()
	m := msgCtx{source: c.source(topic), topic: topic, recv: in.recv}
	for _, i := range in.match {
		s := c.subs[i]
		c.subMessages[i].Inc()
		m.probs = m.probs[:0]
		n := len(dst)
		if !utf8.ValidString(topic) {
			// MQTT forbids it and brokers should refuse it; never let it into signal names.
			m.addProblem(reasonInvalidUTF8, "topic is not valid UTF-8")
		} else if len(payload) > int(c.cfg.MaxPayload) {
			// Payloads beyond it are cut when read (pubCutter): its size is not known here.
			m.addProblem(reasonTooLarge, "payload exceeds max_payload %s", c.cfg.MaxPayload)
		} else {
			dst = c.parse(dst, &m, s, i, payload)
		}
		if k := len(dst) - n; k > 0 {
			c.subSamples[i].Add(float64(k))
		}
		for _, p := range m.probs {
			c.m.bad.WithLabelValues(s.filter, p.reason).Inc()
			c.warn.Warn(s.filter+"|"+p.reason, "bad payload", "subscription", s.filter, "topic", topic, "reason", p.reason, "detail", p.detail)
		}
	}
	return dst
}

// source names a sample's origin, "<collector>:<topic>", cached per topic.
func (c *Collector) source(topic string) string {
	if s, ok := c.sources[topic]; ok {
		return s
	}
	if len(c.sources) >= maxCachedNames {
		clear(c.sources)
	}
	s := c.name + ":" + topic
	c.sources[topic] = s
	return s
}

// parse maps one payload. A bug in a parser must not take the agent down with it: a panic is
// counted as a bad payload, the message is acknowledged and its partial samples are dropped.
func (c *Collector) parse(dst []signal.Sample, m *msgCtx, s *sub, i int, payload []byte) (out []signal.Sample) {
	n := len(dst)
	defer func() {
		if r := recover(); r != nil {
			m.addProblem(reasonInternal, "parser panic: %v", r)
			c.log.Error("parser panic", "subscription", s.filter, "topic", m.topic, "panic", r, "stack", string(debug.Stack()))
			out = dst[:n]
		}
	}()
	switch s.format {
	case FormatJSON:
		return s.parseJSON(dst, m, payload)
	case FormatValue:
		return s.parseValue(dst, m, payload)
	case FormatSparkplugB:
		return s.parseSparkplug(dst, m, payload, c.sp[i], c.cfg.Sparkplug.RebirthOnGap, c.cfg.Sparkplug.RebirthInterval)
	}
	return dst
}

// watchdog resets the session when a live subscription has been silent past its stall_timeout
// while connected. Silence caused by our own backpressure (a blocked Emit) does not count.
func (c *Collector) watchdog(ctx context.Context, reset func(string)) {
	tick := time.Duration(0)
	for _, s := range c.subs {
		if s.stall > 0 && (tick == 0 || s.stall/4 < tick) {
			tick = s.stall / 4
		}
	}
	if tick == 0 {
		return
	}
	tick = max(tick, 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		since := c.connectedAt.Load()
		if since == 0 || c.busy.Load() || c.queued.Load() > 0 {
			continue
		}
		now := time.Now().UnixNano()
		for i, s := range c.subs {
			if s.stall <= 0 {
				continue
			}
			last := max(c.lastMsg[i].Load(), since)
			if time.Duration(now-last) > s.stall {
				c.m.stalls.WithLabelValues(s.filter).Inc()
				c.log.Warn("subscription stalled", "subscription", s.filter, "silent_for", time.Duration(now-last).Round(time.Millisecond))
				c.setState(signal.CollectorReconnecting, "stalled_subscription", s.filter) // the reset below rebuilds the session
				c.connectedAt.Store(0)
				reset("no message on " + s.filter + " within stall_timeout")
				break
			}
		}
	}
}
