package commerce

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/ratelog"
)

// HandlerOptions configure Handler.
type HandlerOptions struct {
	Config  Config // Prefix, HTTP (token and limits) are used
	Log     *slog.Logger
	Metrics *Metrics
	// MaxFuture refuses events dated further ahead of Now (the inventory's max_future; 0: no bound).
	MaxFuture time.Duration
	Now       func() time.Time // time.Now when nil
}

// Routes served by Handler.
const (
	SalesPath     = "/api/v1/commerce/sales"
	InventoryPath = "/api/v1/commerce/inventory"
)

// Handler serves POST SalesPath and POST InventoryPath (docs/commerce-format.md "HTTP"): a bearer
// token, a bounded body of one event, a JSON array of events or NDJSON, and a result per event.
// Valid events of a batch are published even when others are invalid. It fails without a token.
func Handler(pub EventPublisher, opts HandlerOptions) (http.Handler, error) {
	if err := opts.Config.check(true); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		return nil, errors.New("commerce handler: no logger")
	}
	if opts.Metrics == nil {
		m, _ := NewMetrics(nil)
		opts.Metrics = m
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &handler{pub: pub, cfg: opts.Config.HTTP, warn: ratelog.New(opts.Log, time.Minute), m: opts.Metrics,
		token: opts.Config.HTTP.Token.Value(), maxFuture: opts.MaxFuture, now: opts.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+SalesPath, func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, kindSale, func(data []byte) (Event, error) { return DecodeSale("", data) })
	})
	mux.HandleFunc("POST "+InventoryPath, func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, kindInventory, func(data []byte) (Event, error) { return DecodeSnapshot(data) })
	})
	return mux, nil
}

type handler struct {
	pub   EventPublisher
	cfg   HTTPConfig
	warn  *ratelog.Logger // a client retrying with a wrong token, or an outage, would flood the log
	m     *Metrics
	token string // compared with config.TokenEqual: constant time whatever the lengths

	maxFuture time.Duration
	now       func() time.Time
}

// EventResult is the fate of one event of a request.
type EventResult struct {
	Index  int    `json:"index"`          // position in the request, from 0
	Line   int    `json:"line,omitempty"` // NDJSON: the body's line
	ID     string `json:"id,omitempty"`   // the event's MsgID, once decoded
	Status string `json:"status"`         // accepted, duplicate, invalid, failed
	Seq    uint64 `json:"stream_seq,omitempty"`
	Field  string `json:"field,omitempty"` // invalid: the field at fault ("" for the whole event)
	Error  string `json:"error,omitempty"`
}

// Response is the body of every answer to a request that got past authentication and reading.
type Response struct {
	Accepted   int           `json:"accepted"`
	Duplicates int           `json:"duplicates"`
	Invalid    int           `json:"invalid"`
	Failed     int           `json:"failed"`
	Results    []EventResult `json:"results"`
}

type errorBody struct {
	Error string `json:"error"`
}

func (h *handler) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	return config.TokenEqual(strings.TrimSpace(got), h.token)
}

func (h *handler) reply(w http.ResponseWriter, kind string, code int, body any) {
	h.m.Requests.WithLabelValues(kind, strconv.Itoa(code)).Inc()
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gemba-hub"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body) // a client gone away is no error of ours
}

func (h *handler) fail(w http.ResponseWriter, kind string, code int, format string, args ...any) {
	h.reply(w, kind, code, errorBody{Error: fmt.Sprintf(format, args...)})
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request, kind string, decode func([]byte) (Event, error)) {
	if !h.authorized(r) {
		// No detail: which part was wrong helps only someone guessing. The token is never logged.
		h.warn.Warn("unauthorized", "commerce http: unauthorized", "remote", r.RemoteAddr, "path", r.URL.Path)
		h.fail(w, kind, http.StatusUnauthorized, "unauthorized")
		return
	}
	ndjson, err := bodyFormat(r.Header.Get("Content-Type"))
	if err != nil {
		h.fail(w, kind, http.StatusUnsupportedMediaType, "%v", err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.fail(w, kind, http.StatusRequestEntityTooLarge, "body larger than %d bytes: split it", h.cfg.MaxBodyBytes)
			return
		}
		h.fail(w, kind, http.StatusBadRequest, "reading the body: %v", err)
		return
	}
	items, err := splitBody(body, ndjson, h.cfg.MaxEvents)
	if err != nil {
		h.fail(w, kind, http.StatusBadRequest, "%v", err)
		return
	}
	resp := h.process(r.Context(), kind, items, decode)
	code := http.StatusOK
	switch {
	case resp.Failed > 0:
		code = http.StatusServiceUnavailable // retry the whole request: ids make it idempotent
	case resp.Invalid > 0:
		code = http.StatusUnprocessableEntity // the valid ones are stored; fix the rest
	}
	if resp.Failed > 0 {
		w.Header().Set("Retry-After", "5")
	}
	h.reply(w, kind, code, resp)
}

// item is one event's bytes with where it came from.
type item struct {
	data []byte
	line int // NDJSON only
	err  error
}

func (h *handler) process(ctx context.Context, kind string, items []item, decode func([]byte) (Event, error)) Response {
	resp := Response{Results: make([]EventResult, len(items))}
	var events []Event
	var at []int // index in items of each event
	seen := map[string]int{}
	for i, it := range items {
		res := &resp.Results[i]
		res.Index, res.Line = i, it.line
		err := it.err
		var ev Event
		if err == nil {
			ev, err = decode(it.data)
		}
		if err == nil {
			err = CheckFuture(ev, h.now(), h.maxFuture)
		}
		if err != nil {
			res.Status, res.Field, res.Error = outcomeInvalid, Field(err), err.Error()
			continue
		}
		res.ID = ev.MsgID()
		if first, dup := seen[res.ID]; dup {
			// The same identity twice in one request: JetStream would silently keep the first; say so.
			res.Status, res.Error = outcomeDuplicate, fmt.Sprintf("same id as event %d of this request", first)
			continue
		}
		seen[res.ID] = i
		events = append(events, ev)
		at = append(at, i)
	}
	if len(events) > 0 {
		for j, r := range h.pub.Publish(ctx, events) {
			res := &resp.Results[at[j]]
			var fe *FieldError
			switch {
			case errors.As(r.Err, &fe): // refused before sending (a channel the stream does not capture)
				res.Status, res.Field, res.Error = outcomeInvalid, fe.Field, fe.Error()
			case r.Err != nil:
				res.Status, res.Error = outcomeFailed, "not stored, retry: "+r.Err.Error()
				h.warn.Warn("publish", "commerce http: publish failed", "id", r.ID, "err", r.Err)
			case r.Duplicate:
				res.Status, res.Seq = outcomeDuplicate, r.Seq
			default:
				res.Status, res.Seq = outcomeAccepted, r.Seq
			}
		}
	}
	for _, res := range resp.Results {
		switch res.Status {
		case outcomeAccepted:
			resp.Accepted++
		case outcomeDuplicate:
			resp.Duplicates++
		case outcomeInvalid:
			resp.Invalid++
		case outcomeFailed:
			resp.Failed++
		}
		h.m.Received.WithLabelValues("http", kind, res.Status).Inc()
	}
	return resp
}

// bodyFormat accepts application/json (one event or an array) and application/x-ndjson (one event per line).
func bodyFormat(contentType string) (ndjson bool, err error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false, fmt.Errorf("Content-Type %q: want application/json or application/x-ndjson", clipStr(contentType))
	}
	switch mt {
	case "application/json":
		return false, nil
	case "application/x-ndjson", "application/jsonl":
		return true, nil
	}
	return false, fmt.Errorf("Content-Type %q: want application/json or application/x-ndjson", clipStr(mt))
}

// splitBody cuts a body into events. A JSON body that is not valid JSON is refused whole (where one
// event ends is unknowable); an NDJSON line that is not valid JSON is one invalid event.
func splitBody(body []byte, ndjson bool, maxEvents int) ([]item, error) {
	var items []item
	if ndjson {
		for n, line := range bytes.Split(body, []byte("\n")) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			if len(items) == maxEvents {
				return nil, fmt.Errorf("more than %d events: split the request", maxEvents)
			}
			items = append(items, item{data: line, line: n + 1})
		}
	} else {
		trimmed := bytes.TrimSpace(body)
		switch {
		case len(trimmed) == 0:
		case trimmed[0] == '[':
			var raws []json.RawMessage
			if err := json.Unmarshal(trimmed, &raws); err != nil {
				return nil, fmt.Errorf("body: not a JSON array of events: %v", err)
			}
			if len(raws) > maxEvents {
				return nil, fmt.Errorf("%d events, at most %d allowed: split the request", len(raws), maxEvents)
			}
			for _, r := range raws {
				items = append(items, item{data: r})
			}
		default:
			items = append(items, item{data: trimmed})
		}
	}
	if len(items) == 0 {
		return nil, errors.New("body: no event")
	}
	return items, nil
}
