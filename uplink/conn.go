package uplink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/signal"
)

func validate(c *Config) error { return config.NewDecoder().Unmarshal(nil, c) }

func replaceAll(s, old, repl string) string { return strings.ReplaceAll(s, old, repl) }

// backoff is capped exponential backoff with ±50% jitter, so that many agents coming back after a
// hub outage do not reconnect in lockstep.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	}
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	return jitter(d)
}

func (b *backoff) reset() { b.cur = 0 }

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)+1))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// natsOptions builds the client options. ReconnectBufSize(-1) turns off the client's in-memory
// reconnect buffer: while disconnected a publish fails at once instead of being held in memory,
// where a crash would lose it. Durability is the buffer's job.
func (u *Uplink) natsOptions() ([]nats.Option, error) {
	n := &u.cfg.NATS
	name := n.Name
	if name == "" {
		name = "gemba-agent/" + u.id.Agent
	}
	bo := backoff{min: n.ReconnectWait, max: n.ReconnectMaxWait}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(-1),
		nats.Timeout(5 * time.Second),
		nats.PingInterval(20 * time.Second),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			if attempts <= 1 {
				bo.reset()
			}
			return bo.next()
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			u.setConnected(nil, false)
			if err != nil {
				u.log.Warn("nats disconnected", "err", u.setErr(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			u.setConnected(nc, true)
			u.log.Info("nats reconnected", "server", redactURL(nc.ConnectedUrl()))
			u.checkStreamSoon()
		}),
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) {
			u.log.Debug("nats reconnect failed", "err", u.setErr(err))
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			// Authorization failures during reconnects arrive here, and so do publish permission
			// violations: the server drops the message and says so only on this channel.
			if u.onPermissionDenied(err) {
				return
			}
			u.log.Warn("nats error", "err", u.setErr(u.explainConnErr(err)))
		}),
		nats.ClosedHandler(func(nc *nats.Conn) { u.setConnected(nil, false) }),
	}
	switch {
	case n.User != "":
		opts = append(opts, nats.UserInfo(n.User, n.Password.Value()))
	case n.Token.IsSet():
		opts = append(opts, nats.Token(n.Token.Value()))
	case n.NkeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(n.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nkey_seed_file %s: %w", n.NkeySeedFile, err)
		}
		opts = append(opts, o)
	case n.CredsFile != "":
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	}
	if n.TLS.enabled() {
		opts = append(opts, nats.Secure(&tls.Config{ServerName: n.TLS.ServerName, MinVersion: tls.VersionTLS12}))
		if n.TLS.CAFile != "" {
			opts = append(opts, nats.RootCAs(n.TLS.CAFile))
		}
		if n.TLS.CertFile != "" {
			opts = append(opts, nats.ClientCert(n.TLS.CertFile, n.TLS.KeyFile))
		}
	}
	return opts, nil
}

func (u *Uplink) setConnected(nc *nats.Conn, up bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if up == u.connected {
		return
	}
	u.connected = up
	if up {
		u.server = redactURL(nc.ConnectedUrl())
		close(u.connCh)
	} else {
		u.server = ""
		u.connCh = make(chan struct{})
	}
}

// connectedCh returns a channel that is closed while the connection is up.
func (u *Uplink) connectedCh() <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.connCh
}

// explainConnErr names the configured authentication method when the server refuses it, so the
// operator knows which setting to fix. The secret itself is never part of the message.
func (u *Uplink) explainConnErr(err error) error {
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		return err
	}
	n := &u.cfg.NATS
	var method string
	switch {
	case n.User != "":
		method = "user " + n.User + " and its password"
	case n.Token.IsSet():
		method = "the token"
	case n.NkeySeedFile != "":
		method = "the NKEY seed in " + n.NkeySeedFile
	case n.CredsFile != "":
		method = "the credentials in " + n.CredsFile
	case n.TLS.CertFile != "":
		method = "the client certificate " + n.TLS.CertFile
	default:
		method = "no credentials (none configured)"
	}
	return fmt.Errorf("credentials refused by NATS: check %s (%w)", method, err)
}

// onPermissionDenied records a publish permission violation. Without it the only symptom is a
// PubAck that never comes (a timeout that hides the cause), so it becomes the readiness reason
// at once, and stays the reason of the timeouts that follow.
func (u *Uplink) onPermissionDenied(err error) bool {
	if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(strings.ToLower(err.Error()), "publish") {
		return false
	}
	msg := u.setErr(err)
	why := fmt.Sprintf("the NATS user is not permitted to publish the agent's data (%s); records stay in the buffer: grant publish on %s.> to this user",
		msg, u.cfg.NATS.SubjectPrefix)
	u.mu.Lock()
	first := u.deniedWhy == ""
	u.deniedWhy, u.deniedAt = why, time.Now()
	for _, l := range u.lanes { // the violation does not say which subject: every stream's PubAck clears its own
		u.publishWhy[l.stream] = why
	}
	u.mu.Unlock()
	if first {
		u.log.Error("publish refused by NATS permissions", "err", msg)
	}
	return true
}

// deniedRecently returns the permission violation that explains a publish failure now: one
// reported within the last publish timeout (and a margin), since the message that timed out was
// sent at most that long ago.
func (u *Uplink) deniedRecently() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.deniedWhy != "" && time.Since(u.deniedAt) <= 2*u.cfg.PublishTimeout+5*time.Second {
		return u.deniedWhy
	}
	return ""
}

// jetStreamMissing tells whether err (a stream request that nobody answered) means that
// JetStream is not enabled on the server or the account, and says so in words an operator can act on.
func (u *Uplink) jetStreamMissing(ctx context.Context, js jetstream.JetStream, err error) (string, bool) {
	if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrJetStreamNotEnabled) &&
		!errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
		return "", false
	}
	_, aerr := js.AccountInfo(ctx)
	switch {
	case errors.Is(aerr, jetstream.ErrJetStreamNotEnabledForAccount):
		return "JetStream is not enabled for this account on the NATS server (" + u.cfg.NATS.describe() + "): enable it for the account; records stay in the buffer", true
	case errors.Is(aerr, jetstream.ErrJetStreamNotEnabled):
		return "JetStream is not enabled on the NATS server (" + u.cfg.NATS.describe() + "): start it with jetstream enabled; records stay in the buffer", true
	}
	return "", false
}

// connect dials until it succeeds or ctx ends; after that the client reconnects by itself forever.
func (u *Uplink) connect(ctx context.Context) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := u.natsOptions()
	if err != nil {
		u.setErr(err)
		return nil, nil, fmt.Errorf("uplink: %w", err)
	}
	url := strings.Join(u.cfg.NATS.Servers, ",")
	bo := backoff{min: u.cfg.NATS.ReconnectWait, max: u.cfg.NATS.ReconnectMaxWait}
	for {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			jsOpts := []jetstream.JetStreamOpt{
				jetstream.WithPublishAsyncMaxPending(2 * u.cfg.MaxInflight),
				jetstream.WithPublishAsyncTimeout(u.cfg.PublishTimeout),
				jetstream.WithPublishAsyncAckHandler(u.onAck),
				jetstream.WithPublishAsyncErrHandler(u.onErr),
			}
			var js jetstream.JetStream
			if u.cfg.NATS.Domain != "" {
				js, err = jetstream.NewWithDomain(nc, u.cfg.NATS.Domain, jsOpts...)
			} else {
				js, err = jetstream.New(nc, jsOpts...)
			}
			if err != nil {
				nc.Close()
				return nil, nil, fmt.Errorf("uplink: jetstream: %w", err)
			}
			u.mu.Lock()
			u.nc, u.js = nc, js
			u.mu.Unlock()
			u.setConnected(nc, true)
			u.log.Info("nats connected", "server", redactURL(nc.ConnectedUrl()))
			return nc, js, nil
		}
		msg := u.setErr(u.explainConnErr(err))
		d := bo.next()
		u.log.Warn("nats connect failed", "servers", u.cfg.NATS.describe(), "err", msg, "retry_in", d.Round(time.Millisecond))
		if !sleepCtx(ctx, d) {
			return nil, nil, ctx.Err()
		}
	}
}

// provision creates/updates or verifies the stream, retrying until it succeeds or ctx ends.
func (u *Uplink) provision(ctx context.Context, js jetstream.JetStream) bool {
	bo := backoff{min: u.cfg.NATS.ReconnectWait, max: u.cfg.NATS.ReconnectMaxWait}
	for {
		if err := u.ensureStream(ctx, js); err == nil {
			return true
		}
		if !sleepCtx(ctx, bo.next()) {
			return false
		}
	}
}

// statusMissing is why heartbeats do not reach the stream ("" when they do).
func (u *Uplink) statusMissing() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.statusWhy
}

func (u *Uplink) setStream(ok bool, why string) {
	u.mu.Lock()
	u.streamOK, u.streamWhy = ok, why
	u.mu.Unlock()
}

// checkStreamSoon asks watchStream to check the stream again (after a reconnect, or when a
// publish reports that no stream answers).
func (u *Uplink) checkStreamSoon() {
	select {
	case u.streamCheck <- struct{}{}:
	default:
	}
}

func (u *Uplink) watchStream(ctx context.Context, js jetstream.JetStream) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.streamCheck:
		}
		bo := backoff{min: u.cfg.NATS.ReconnectWait, max: u.cfg.NATS.ReconnectMaxWait}
		for ctx.Err() == nil {
			select {
			case <-u.connectedCh():
			case <-ctx.Done():
				return
			}
			if u.ensureStream(ctx, js) == nil && u.statusMissing() == "" {
				break
			}
			sleepCtx(ctx, bo.next())
		}
	}
}

// streamSubjects are the subjects the stream needs: every agent's samples, features and status
// under the prefix, so one stream serves a whole fleet.
func (u *Uplink) streamSubjects() []string {
	p := u.cfg.NATS.SubjectPrefix
	return []string{p + ".*.*.samples", p + ".*.*.features", p + ".*.*.status"}
}

func (u *Uplink) ensureStream(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	if u.cfg.NATS.CreateStream {
		err = u.createStream(ctx, js)
	} else {
		err = u.verifyStream(ctx, js)
	}
	if err != nil {
		why := u.redact(err.Error())
		if w, ok := u.jetStreamMissing(ctx, js, err); ok {
			why = w
			err = fmt.Errorf("%s (%w)", w, err)
		}
		u.setStream(false, why)
		u.setErr(err)
		u.log.Warn("stream not usable", "stream", u.cfg.NATS.Stream, "err", why)
		return err
	}
	u.setStream(true, "")
	return nil
}

func (u *Uplink) createStream(ctx context.Context, js jetstream.JetStream) error {
	n := &u.cfg.NATS
	want := jetstream.StreamConfig{
		Name:        n.Stream,
		Description: "gemba agent data (samples, features, status)",
		Subjects:    u.streamSubjects(),
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      n.MaxAge,
		MaxBytes:    int64(n.MaxBytes),
		Replicas:    n.Replicas,
		Duplicates:  n.DuplicateWindow,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
	}
	if n.MaxBytes == 0 {
		want.MaxBytes = -1
	}
	if n.Storage == "memory" {
		want.Storage = jetstream.MemoryStorage
	}
	if n.Discard == "old" {
		want.Discard = jetstream.DiscardOld
	}
	s, err := js.Stream(ctx, n.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			if cerr := u.capturedElsewhere(ctx, js, false); cerr != nil {
				return fmt.Errorf("create stream %s: %w (%w)", n.Stream, cerr, err)
			}
			return fmt.Errorf("create stream %s: %w", n.Stream, err)
		}
		u.log.Info("stream created", "stream", n.Stream, "subjects", want.Subjects, "replicas", want.Replicas)
		return nil
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", n.Stream, err)
	}
	// Update the existing stream to our settings, keeping subjects others added to it.
	have := s.CachedInfo().Config
	upd := have
	for _, sub := range want.Subjects {
		if !slices.ContainsFunc(upd.Subjects, func(have string) bool { return subjectCovers(have, sub) }) {
			upd.Subjects = append(slices.Clone(upd.Subjects), sub)
		}
	}
	upd.MaxAge, upd.MaxBytes, upd.Replicas, upd.Duplicates, upd.Discard = want.MaxAge, want.MaxBytes, want.Replicas, want.Duplicates, want.Discard
	if have.Storage != want.Storage {
		return fmt.Errorf("stream %s exists with %s storage, config asks for %s (JetStream cannot change it; delete the stream or change uplink.nats.storage)", n.Stream, have.Storage, want.Storage)
	}
	if slices.Equal(upd.Subjects, have.Subjects) && upd.MaxAge == have.MaxAge && upd.MaxBytes == have.MaxBytes &&
		upd.Replicas == have.Replicas && upd.Duplicates == have.Duplicates && upd.Discard == have.Discard {
		return nil
	}
	if _, err := js.UpdateStream(ctx, upd); err != nil {
		return fmt.Errorf("update stream %s: %w", n.Stream, err)
	}
	u.log.Info("stream updated", "stream", n.Stream, "subjects", upd.Subjects)
	return nil
}

// verifyStream checks that the configured stream captures this agent's subjects.
func (u *Uplink) verifyStream(ctx context.Context, js jetstream.JetStream) error {
	n := &u.cfg.NATS
	if err := u.capturedElsewhere(ctx, js, true); err != nil {
		return err
	}
	if err := u.checkStatusSubject(ctx, js); err != nil {
		return err
	}
	s, err := js.Stream(ctx, n.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", n.Stream, err)
	}
	if dw := s.CachedInfo().Config.Duplicates; dw <= u.cfg.RestartBudget {
		u.log.Warn("stream duplicate window below restart budget", "stream", n.Stream, "duplicate_window", dw,
			"restart_budget", u.cfg.RestartBudget, "effect", "a replay after a longer restart can store duplicates; the hub dedupes on (agent, stream, seq)")
	}
	return nil
}

// capturedElsewhere checks which stream captures each of the agent's subjects: an error names a
// stream other than the configured one, or (with missing) a subject no stream captures.
func (u *Uplink) capturedElsewhere(ctx context.Context, js jetstream.JetStream, missing bool) error {
	n := &u.cfg.NATS
	for _, l := range u.lanes {
		name, err := js.StreamNameBySubject(ctx, l.subject)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			if missing {
				return fmt.Errorf("no JetStream stream captures %s (create stream %s with that subject on the hub, or set uplink.nats.create_stream: true)", l.subject, n.Stream)
			}
		case err != nil:
			return fmt.Errorf("looking up the stream for %s: %w", l.subject, err)
		case name != n.Stream:
			return fmt.Errorf("subject %s is captured by stream %s, but uplink.nats.stream is %s", l.subject, name, n.Stream)
		}
	}
	return nil
}

// checkStatusSubject records (statusWhy) whether the stream captures the heartbeats: without
// them the hub never sees the agent, although its data flows, so the data is not held back for it.
func (u *Uplink) checkStatusSubject(ctx context.Context, js jetstream.JetStream) error {
	var why string
	if u.cfg.Heartbeat > 0 {
		n := &u.cfg.NATS
		subject := n.subjectFor(u.id, signal.StreamStatus)
		name, err := js.StreamNameBySubject(ctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			why = fmt.Sprintf("stream %s does not capture %s: the hub never sees this agent's heartbeats (add the subject to the stream); data is forwarded", n.Stream, subject)
		case err != nil:
			return fmt.Errorf("looking up the stream for %s: %w", subject, err)
		case name != n.Stream:
			why = fmt.Sprintf("%s is captured by stream %s, not %s: the hub never sees this agent's heartbeats; data is forwarded", subject, name, n.Stream)
		}
	}
	u.mu.Lock()
	was := u.statusWhy
	u.statusWhy = why
	u.mu.Unlock()
	if why != "" && was == "" {
		u.log.Warn("heartbeats not stored", "reason", why)
	}
	return nil
}

// subjectCovers reports whether every subject matching sub also matches pattern (NATS wildcards:
// '*' one token, '>' the rest). Adding a subject a stream already covers would be refused as an
// overlap.
func subjectCovers(pattern, sub string) bool {
	p, q := strings.Split(pattern, "."), strings.Split(sub, ".")
	for i, t := range p {
		if t == ">" {
			return len(q) > i
		}
		if i >= len(q) || q[i] == ">" || (t != "*" && t != q[i]) {
			return false
		}
	}
	return len(p) == len(q)
}
