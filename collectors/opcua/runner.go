package opcua

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/signal"
)

// heartbeatHandle is the client handle of the Server's CurrentTime item in the first subscription.
// Servers that tick it prove their publish path alive every second, so silence means a dead
// subscription, not quiet data.
const heartbeatHandle = 0

// runner is the work of one session: subscriptions, pollers and the watchdog.
type runner struct {
	c    *Collector
	s    *session
	emit collectors.Emitter

	subs    map[int]*opcua.Subscription // by group index
	notifs  chan *opcua.PublishNotificationData
	errs    chan error
	wg      sync.WaitGroup
	pollers map[int]*poller

	lastData   atomic.Int64  // unix nanos of the last notification (data or heartbeat)
	interval   time.Duration // longest publishing interval of our subscriptions (as revised by the server)
	heartbeats int           // heartbeat notifications; the first is only the initial value
	buf        []signal.Sample
	kept       []*ua.MonitoredItemNotification // values that made samples in buf
}

// Memory bounds on the notification path. A publish response is decoded whole (every DataValue a
// few heap objects), and responses wait in notifs until converted: at 5,000 variables × 10 changes
// per publishing interval, gopcua's default of 10,000 notifications per response and a queue of 16
// could hold 160,000 decoded values (tens of MiB). The server splits a larger cycle into several
// responses (MoreNotifications), so this costs round trips (gopcua has one publish request in
// flight), not data.
const (
	maxNotificationsPerPublish = 5000
	notifQueue                 = 4
)

func newRunner(c *Collector, s *session, emit collectors.Emitter) *runner {
	r := &runner{
		c: c, s: s, emit: emit,
		subs:    map[int]*opcua.Subscription{},
		notifs:  make(chan *opcua.PublishNotificationData, notifQueue),
		errs:    make(chan error, len(c.groups)+1),
		pollers: map[int]*poller{},
	}
	r.lastData.Store(time.Now().UnixNano())
	return r
}

// start creates the subscriptions and starts the pollers. Before each subscription it handles the
// notifications already queued: gopcua's Subscribe waits (without a context) for its publish loop,
// which waits for room in our queue, and nothing else reads the queue before start returns.
func (r *runner) start(ctx context.Context) error {
	heartbeat := true
	for gi, g := range r.c.groups {
		if g.Mode == ModePoll {
			p := &poller{r: r, group: gi}
			r.pollers[gi] = p
			r.wg.Go(func() { p.run(ctx) })
			continue
		}
		if err := r.drain(ctx); err != nil {
			return err
		}
		keepAlive := uint32(max(1, min(1000, int(10*time.Second/g.PublishingInterval))))
		sub, err := r.s.client.Subscribe(ctx, &opcua.SubscriptionParameters{
			Interval:                   g.PublishingInterval,
			MaxKeepAliveCount:          keepAlive,
			LifetimeCount:              keepAlive * 6,
			MaxNotificationsPerPublish: maxNotificationsPerPublish,
		}, r.notifs)
		if err != nil {
			return fmt.Errorf("create subscription for group %s: %w", g.Name, err)
		}
		r.subs[gi] = sub
		r.interval = max(r.interval, g.PublishingInterval, sub.RevisedPublishingInterval)
		if heartbeat {
			heartbeat = false
			req := opcua.NewMonitoredItemCreateRequestWithDefaults(ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime), ua.AttributeIDValue, heartbeatHandle)
			req.RequestedParameters.SamplingInterval = 1000
			req.RequestedParameters.QueueSize = 1
			if _, err := sub.Monitor(ctx, ua.TimestampsToReturnNeither, req); err != nil {
				return fmt.Errorf("monitor heartbeat: %w", err)
			}
		}
		if err := r.monitor(ctx, gi, r.c.byGroup[gi]); err != nil {
			return fmt.Errorf("group %s: %w", g.Name, err)
		}
	}
	return nil
}

// monitor creates monitored items for the group's items that have a resolved id, in batches no
// larger than the server's MaxMonitoredItemsPerCall. A node the server rejects is quarantined; a
// refused filter is retried without one: an absolute deadband then applies on our side, a percent one
// is not applied at all (logged and counted in gemba_opcua_percent_deadband_not_applied).
func (r *runner) monitor(ctx context.Context, gi int, items []*item) error {
	sub := r.subs[gi]
	var todo []*item
	r.c.mu.Lock()
	for _, it := range items {
		if it.id != nil && it.monitorID == 0 {
			todo = append(todo, it)
		}
	}
	r.c.mu.Unlock()
	batch := batchSize(r.s.limits.MaxMonitoredItemsPerCall, r.c.cfg.BatchSize)
	for len(todo) > 0 {
		var retry []*item
		for start := 0; start < len(todo); start += batch {
			part := todo[start:min(start+batch, len(todo))]
			reqs := make([]*ua.MonitoredItemCreateRequest, len(part))
			for i, it := range part {
				reqs[i] = r.createRequest(it)
			}
			res, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, reqs...)
			if err != nil {
				return fmt.Errorf("create monitored items: %w", err)
			}
			if res.ResponseHeader.ServiceResult != ua.StatusOK {
				return fmt.Errorf("create monitored items: %w", res.ResponseHeader.ServiceResult)
			}
			if len(res.Results) != len(part) {
				return fmt.Errorf("create monitored items: %d results for %d items", len(res.Results), len(part))
			}
			for i, it := range part {
				code := res.Results[i].StatusCode
				switch {
				case code == ua.StatusOK || uint32(code)&0xC0000000 == 0:
					r.c.mu.Lock()
					it.monitorID = res.Results[i].MonitoredItemID
					recreated := it.recreated
					it.recreated = false
					r.c.mu.Unlock()
					it.fresh = true
					if !recreated { // else its first value tells (servers accept items for unknown nodes too)
						r.c.setItem(it, stateActive, "")
					}
				case filterCodes[code] && !it.noFilter:
					r.c.mu.Lock()
					it.noFilter = true
					r.c.mu.Unlock()
					if it.spec.Deadband.Type == "percent" && it.spec.Deadband.Value > 0 {
						// The collector cannot compute a percent deadband without the node's
						// EURange, and a server that refuses the filter usually has none for it.
						r.c.m.unfiltered.Inc()
						r.c.log.Warn("server refused the percent deadband: NOT applied, every change of this node is stored (use an absolute deadband to filter here)",
							"signal", it.spec.Signal, "deadband_percent", it.spec.Deadband.Value, "status", statusName(code))
					} else {
						r.c.log.Warn("server refused the deadband/trigger filter: the absolute deadband is applied here, the trigger is status_value",
							"signal", it.spec.Signal, "status", statusName(code))
					}
					retry = append(retry, it)
				default:
					r.c.mu.Lock()
					it.recreated = false
					r.c.mu.Unlock()
					r.c.setItem(it, stateQuarantined, statusName(code))
				}
			}
		}
		todo = retry
	}
	return nil
}

func (r *runner) createRequest(it *item) *ua.MonitoredItemCreateRequest {
	req := opcua.NewMonitoredItemCreateRequestWithDefaults(it.id, ua.AttributeIDValue, it.handle)
	p := req.RequestedParameters
	p.SamplingInterval = -1 // the publishing interval
	if it.spec.Sampling >= 0 {
		p.SamplingInterval = float64(it.spec.Sampling) / float64(time.Millisecond)
	}
	p.QueueSize = it.spec.QueueSize
	p.DiscardOldest = it.spec.DiscardOldest
	db := it.spec.Deadband
	if !it.noFilter && (db.Value > 0 || it.spec.Trigger != ua.DataChangeTriggerStatusValue) {
		f := &ua.DataChangeFilter{Trigger: it.spec.Trigger}
		if db.Value > 0 {
			f.DeadbandType, f.DeadbandValue = uint32(ua.DeadbandTypeAbsolute), db.Value
			if db.Type == "percent" {
				f.DeadbandType = uint32(ua.DeadbandTypePercent)
			}
		}
		p.Filter = ua.NewExtensionObject(f)
	}
	return req
}

// run handles notifications until the session fails or ctx ends. Notifications received by then
// are data no new session gets again (it gets only the current values): they are stored first.
func (r *runner) run(ctx context.Context) error {
	err := r.loop(ctx)
	if err != nil && ctx.Err() == nil && !errors.Is(err, errEmit) { // not when stopping: emit is cancelled too
		if derr := r.drain(ctx); errors.Is(derr, errEmit) {
			return derr
		}
	}
	return err
}

// loop handles notifications and the watchdog until the session fails or ctx ends.
func (r *runner) loop(ctx context.Context) error {
	cfg := r.c.cfg.Reconnect
	tick := time.Second
	if cfg.Watchdog > 0 {
		tick = max(min(tick, cfg.Watchdog/4), time.Millisecond) // a few ns would be a zero ticker
	}
	watch := time.NewTicker(tick)
	defer watch.Stop()
	retry := time.NewTicker(cfg.QuarantineRetry)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.s.lost:
			return errChannelLost
		case err := <-r.errs:
			return err
		case n := <-r.notifs:
			if err := r.handle(ctx, n); err != nil {
				return err
			}
		case <-watch.C:
			if err := r.watchdog(ctx); err != nil {
				return err
			}
		case <-retry.C:
			if err := r.retryQuarantined(ctx); err != nil {
				return err
			}
		}
	}
}

// drain handles the notifications waiting in the queue, without waiting for more. It returns the
// first error; the others are still handled unless emit failed.
func (r *runner) drain(ctx context.Context) error {
	var first error
	for {
		select {
		case n := <-r.notifs:
			err := r.handle(ctx, n)
			if errors.Is(err, errEmit) {
				return err
			}
			if first == nil {
				first = err
			}
		default:
			return first
		}
	}
}

func (r *runner) handle(ctx context.Context, n *opcua.PublishNotificationData) error {
	if n.Error != nil {
		return fmt.Errorf("publish: %w", n.Error)
	}
	r.lastData.Store(time.Now().UnixNano())
	switch v := n.Value.(type) {
	case *ua.DataChangeNotification:
		now := time.Now()
		out, kept := r.buf[:0], r.kept[:0]
		for _, mi := range v.MonitoredItems {
			if mi == nil || mi.Value == nil {
				continue
			}
			if mi.ClientHandle == heartbeatHandle {
				r.heartbeats++
				continue
			}
			if mi.ClientHandle > uint32(len(r.c.items)) {
				continue
			}
			it := r.c.items[mi.ClientHandle-1]
			before := len(out)
			out = r.c.appendSamples(out, it, mi.Value, now)
			if len(out) > before {
				kept = append(kept, mi)
			}
		}
		r.buf, r.kept = out[:0], kept[:0]
		stored, err := r.c.emitSamples(ctx, r.emit, out)
		if stored {
			for _, mi := range kept {
				r.c.items[mi.ClientHandle-1].remember(mi.Value, now)
			}
		}
		clear(kept)
		return err
	case *ua.StatusChangeNotification:
		if uint32(v.Status)&0x80000000 != 0 {
			return fmt.Errorf("subscription %d status: %w", n.SubscriptionID, v.Status)
		}
	}
	return nil
}

// appendSamples converts one value and applies the client-side deadband; a new monitored item's
// first value is dropped when it is the value stored last.
// A value whose status says the node itself is wrong (it vanished, access was revoked) quarantines
// the node instead; a good value later brings it back. Only the goroutine handling the item's
// group writes its state, so reading it here without the lock is safe.
func (c *Collector) appendSamples(out []signal.Sample, it *item, dv *ua.DataValue, now time.Time) []signal.Sample {
	fresh := it.fresh
	if fresh {
		it.fresh = false
	}
	if isQuarantineCode(dv.Status) {
		if it.state != stateQuarantined {
			c.setItem(it, stateQuarantined, statusName(dv.Status))
		}
		return out
	}
	if it.state != stateActive {
		c.setItem(it, stateActive, "")
	}
	if fresh && it.sameAsStored(dv, now) {
		// a new monitored item's first value is the node's current one: stored already by an
		// earlier session (or monitored item) when its time, status and value are the same
		c.m.repeated.Inc()
		return out
	}
	start := len(out)
	out, dropped := convert(out, it, dv, now)
	if dropped > 0 {
		c.m.arrayDrops.Add(float64(dropped))
		if !it.dropLogged { // once per node: the metric counts every time
			it.dropLogged = true
			c.log.Warn("array longer than max_array: the elements beyond are not stored (gemba_opcua_array_elements_dropped_total)",
				"signal", it.spec.Signal, "node", it.spec.Raw, "length", it.spec.MaxArray+dropped, "max_array", it.spec.MaxArray)
		}
	}
	if len(out)-start == 1 && !it.passDeadband(&out[start]) {
		c.m.deadband.Inc()
		return out[:start]
	}
	return out
}

// emitSamples hands out to the emitter and reports whether they were stored.
func (c *Collector) emitSamples(ctx context.Context, emit collectors.Emitter, out []signal.Sample) (bool, error) {
	if len(out) == 0 {
		return false, nil
	}
	if err := emit.Emit(ctx, out); err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		return false, fmt.Errorf("%w: %v", errEmit, err)
	}
	c.m.samples.Add(float64(len(out)))
	return true, nil
}

// sameAsStored reports whether dv is the value stored last for the item: same sample time,
// status and value. A value without timestamps is never the same (its time is when it came).
func (it *item) sameAsStored(dv *ua.DataValue, now time.Time) bool {
	if !it.stored || dv.Status != it.storedSt || !sampleTime(dv, now).Equal(it.storedAt) {
		return false
	}
	var v any
	if dv.Value != nil {
		v = dv.Value.Value()
	}
	return reflect.DeepEqual(v, it.storedV)
}

// remember records dv as the value stored last for the item.
func (it *item) remember(dv *ua.DataValue, now time.Time) {
	it.stored, it.storedAt, it.storedSt, it.storedV = true, sampleTime(dv, now), dv.Status, nil
	if dv.Value != nil {
		it.storedV = dv.Value.Value()
	}
}

// watchdog rebuilds when the library holds fewer subscriptions than we made, or when data has
// been silent for longer than the watchdog and either the server's heartbeat stopped too or a
// probe read fails.
func (r *runner) watchdog(ctx context.Context) error {
	if len(r.subs) > 0 && len(r.s.client.SubscriptionIDs()) < len(r.subs) {
		return errNoSubscripton
	}
	wd := r.c.cfg.Reconnect.Watchdog
	if wd <= 0 || len(r.subs) == 0 {
		return nil
	}
	// data and the heartbeat come once per publishing interval: a longer interval is not silence
	wd = max(wd, 2*r.interval)
	silent := time.Since(time.Unix(0, r.lastData.Load()))
	if silent < wd {
		return nil
	}
	if r.heartbeats >= 2 { // the server's clock ticks through this subscription, yet nothing came
		return fmt.Errorf("%w (silent %s)", errSilence, silent.Round(time.Millisecond))
	}
	pctx, cancel := context.WithTimeout(ctx, r.c.cfg.Timeouts.Request)
	defer cancel()
	_, err := r.s.client.Read(pctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{
		NodeID: ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime), AttributeID: ua.AttributeIDValue}}})
	if err != nil {
		return fmt.Errorf("watchdog probe after %s of silence: %w", silent.Round(time.Millisecond), err)
	}
	// The server answers but sends nothing and has no heartbeat: quiet data. Check again later.
	r.lastData.Store(time.Now().UnixNano())
	return nil
}

// retryQuarantined re-reads the namespace table and tries quarantined nodes again. A node
// quarantined by a notification (it vanished from the server) still has its monitored item; many
// servers (node-opcua, most PLCs) bind that item to the node object and never notify it again once
// the node is removed and added back, so the item is deleted and created anew.
func (r *runner) retryQuarantined(ctx context.Context) error {
	var q []*item
	r.c.mu.Lock()
	for _, it := range r.c.items {
		if it.state == stateQuarantined {
			q = append(q, it)
		}
	}
	r.c.mu.Unlock()
	if len(q) == 0 {
		return nil
	}
	if err := r.s.client.UpdateNamespaces(ctx); err != nil {
		return fmt.Errorf("read namespace array: %w", err)
	}
	ns := r.s.client.Namespaces()
	byGroup := map[int][]*item{}
	for _, it := range q {
		nid, err := it.spec.Ref.resolve(ns)
		if err != nil {
			continue
		}
		byGroup[it.group] = append(byGroup[it.group], it)
		r.c.mu.Lock()
		if it.monitorID == 0 { // an old monitored item keeps its id until it is deleted
			it.id = nid
		}
		r.c.mu.Unlock()
	}
	for gi, items := range byGroup {
		if p, ok := r.pollers[gi]; ok {
			p.retry.Store(true)
			continue
		}
		if err := r.unmonitor(ctx, gi, items, ns); err != nil {
			return err
		}
		if err := r.monitor(ctx, gi, items); err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
	}
	return nil
}

// unmonitor deletes the monitored items of quarantined items that still have one, so monitor
// creates them again. An item the server no longer knows counts as deleted; one it refused to
// delete keeps its id (monitor skips it: never two items for one node) and is tried again later.
func (r *runner) unmonitor(ctx context.Context, gi int, items []*item, ns []string) error {
	var old []*item
	var ids []uint32
	r.c.mu.Lock()
	for _, it := range items {
		if it.monitorID != 0 {
			old = append(old, it)
			ids = append(ids, it.monitorID)
		}
	}
	r.c.mu.Unlock()
	batch := batchSize(r.s.limits.MaxMonitoredItemsPerCall, r.c.cfg.BatchSize)
	for start := 0; start < len(ids); start += batch {
		end := min(start+batch, len(ids))
		res, err := r.subs[gi].Unmonitor(ctx, ids[start:end]...)
		var code ua.StatusCode
		switch {
		case errors.Is(err, context.Canceled):
			return nil
		case errors.As(err, &code):
			// the service refused (a dead channel is noticed by the loop): not worth a rebuild
			r.c.log.Warn("server refused to delete the monitored items of quarantined nodes: retried later",
				"status", statusName(code), "items", end-start)
			continue
		case err != nil:
			return fmt.Errorf("delete monitored items: %w", err)
		case len(res.Results) != end-start:
			r.c.log.Warn("server answered a delete of monitored items with a wrong result count: retried later",
				"results", len(res.Results), "items", end-start)
			continue
		}
		for i, it := range old[start:end] {
			if code := res.Results[i]; code != ua.StatusOK && code != ua.StatusBadMonitoredItemIDInvalid {
				continue
			}
			nid, _ := it.spec.Ref.resolve(ns) // resolved by the caller
			r.c.mu.Lock()
			it.id, it.monitorID, it.recreated = nid, 0, true
			r.c.mu.Unlock()
		}
	}
	return nil
}

// deleteSubscriptions removes our subscriptions from the server, briefly: the channel may be dead.
func (r *runner) deleteSubscriptions() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, sub := range r.subs {
		if err := sub.Cancel(ctx); err != nil {
			return
		}
	}
}

// wait returns when every poller has stopped.
func (r *runner) wait() { r.wg.Wait() }
