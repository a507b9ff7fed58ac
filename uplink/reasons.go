package uplink

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// errStreamNotMatch is JetStream's answer to a message whose Nats-Expected-Stream is not the
// stream that captured its subject.
const errStreamNotMatch jetstream.ErrorCode = 10060

// publishFailed turns a publish error into a readiness reason an operator can act on.
func (u *Uplink) publishFailed(l *lane, err error) {
	msg := u.setErr(err)
	var apiErr *jetstream.APIError
	var why string
	switch {
	case errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting):
		why = "not connected to NATS; records stay in the buffer"
	case errors.Is(err, nats.ErrMaxPayload):
		why = fmt.Sprintf("%s; the %s stream is stuck on it: lower agent.max_chunk well below max_payload or raise max_payload on the NATS server; records stay in the buffer", msg, l.stream)
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		why = fmt.Sprintf("no JetStream stream answers on %s; records stay in the buffer", l.subject)
		u.setStream(false, why)
		u.checkStreamSoon()
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout) && u.deniedRecently() != "":
		why = u.deniedRecently()
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		why = fmt.Sprintf("no PubAck within publish_timeout %s; records stay in the buffer and are re-sent", u.cfg.PublishTimeout)
	case errors.As(err, &apiErr) && apiErr.ErrorCode == errStreamNotMatch:
		// Another stream captures the subject (the stream was replaced): the stream check names it.
		why = fmt.Sprintf("%s is captured by a stream other than %s; records stay in the buffer", l.subject, u.cfg.NATS.Stream)
		u.checkStreamSoon()
	case errors.As(err, &apiErr):
		why = fmt.Sprintf("stream %s refuses messages: %s; records stay in the buffer (free space in the stream or raise its limits)", u.cfg.NATS.Stream, u.redact(apiErr.Description))
	default:
		why = "publish failing: " + msg
	}
	u.mu.Lock()
	first := u.publishWhy[l.stream] == ""
	u.publishWhy[l.stream] = why
	u.mu.Unlock()
	if first {
		u.log.Warn("publish failing", "stream", l.stream.String(), "reason", why, "err", msg)
	}
}

func (u *Uplink) clearPublishWhy(l *lane) {
	u.mu.Lock()
	was := u.publishWhy[l.stream]
	u.publishWhy[l.stream] = ""
	u.mu.Unlock()
	if was != "" {
		u.log.Info("publishing again", "stream", l.stream.String(), "after", was)
	}
}

// publishFailing returns the first stream's publish failure; u.mu held.
func (u *Uplink) publishFailing() string {
	for _, l := range u.lanes {
		if why := u.publishWhy[l.stream]; why != "" {
			return why
		}
	}
	return ""
}

// maxPayload is the connected server's max_payload.
func (u *Uplink) maxPayload() int64 {
	u.mu.Lock()
	nc := u.nc
	u.mu.Unlock()
	if nc == nil {
		return 0
	}
	return nc.MaxPayload()
}
