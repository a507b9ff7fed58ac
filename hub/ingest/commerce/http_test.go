package commerce

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/testutil"
)

const testToken = "tok-Secret-42"

type httpEnv struct {
	js   jetstream.JetStream
	srv  *httptest.Server
	reg  *prometheus.Registry
	logs *logSink
}

func startHTTP(t *testing.T, mod func(*Config)) *httpEnv {
	t.Helper()
	cfg := testConfig()
	cfg.HTTP.Token = config.NewSecret(testToken)
	if mod != nil {
		mod(&cfg)
	}
	s := startServer(t)
	js := connect(t, s)
	if _, err := EnsureStream(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
	return startHTTPOn(t, js, cfg)
}

func startHTTPOn(t *testing.T, js jetstream.JetStream, cfg Config) *httpEnv {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logSink{}
	h, err := Handler(pub, HandlerOptions{Config: cfg, Log: slog.New(slog.NewTextHandler(logs, nil)), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &httpEnv{js: js, srv: srv, reg: reg, logs: logs}
}

func (e *httpEnv) post(t *testing.T, path, contentType, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *httpEnv) postEvents(t *testing.T, path, body string) (int, Response) {
	t.Helper()
	code, text := e.post(t, path, "application/json", "Bearer "+testToken, body)
	var r Response
	if err := json.Unmarshal([]byte(text), &r); err != nil {
		t.Fatalf("status %d, body %q: %v", code, text, err)
	}
	return code, r
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), "COMMERCE")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestHandlerNeedsToken(t *testing.T) {
	if _, err := Handler(nil, HandlerOptions{Config: DefaultConfig(), Log: quietLog()}); err == nil || !strings.Contains(err.Error(), "http.token") {
		t.Fatalf("handler without a token: %v", err)
	}
}

func TestHTTPAuth(t *testing.T) {
	e := startHTTP(t, nil)
	body := goodSale
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Basic " + testToken, "bearer" + testToken, "Bearer " + testToken + "x",
		"Bearer " + testToken[:len(testToken)-1]} {
		code, text := e.post(t, SalesPath, "application/json", auth, body)
		if code != http.StatusUnauthorized || strings.TrimSpace(text) != `{"error":"unauthorized"}` {
			t.Errorf("Authorization %q: %d %s, want 401 without detail", auth, code, text)
		}
	}
	if n := streamMsgs(t, e.js); n != 0 {
		t.Fatalf("%d messages stored by unauthorized requests", n)
	}
	code, text := e.post(t, SalesPath, "application/json", "Bearer "+testToken, body)
	if code != http.StatusOK {
		t.Fatalf("authorized: %d %s", code, text)
	}
	for _, l := range e.logs.all() {
		if strings.Contains(l, testToken) || strings.Contains(l, testToken[:len(testToken)-1]) {
			t.Fatalf("the token was logged: %s", l)
		}
	}
	if n := testutil.Metric(t, e.reg, "gemba_commerce_http_requests_total", "code", "401"); n != 8 {
		t.Fatalf("401s counted %v, want 8", n)
	}
}

func TestHTTPLimits(t *testing.T) {
	e := startHTTP(t, func(c *Config) { c.HTTP.MaxBodyBytes, c.HTTP.MaxEvents = 4096, 3 })
	auth := "Bearer " + testToken
	big := "[" + strings.Repeat(goodSale+",", 40) + goodSale + "]"
	if code, text := e.post(t, SalesPath, "application/json", auth, big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("body of %d bytes: %d %s, want 413", len(big), code, text)
	}
	four := "[" + goodSale + "," + with(goodSale, "line", "2") + "," + with(goodSale, "line", "3") + "," + with(goodSale, "line", "4") + "]"
	if code, text := e.post(t, SalesPath, "application/json", auth, four); code != http.StatusBadRequest || !strings.Contains(text, "at most 3") {
		t.Errorf("4 events: %d %s, want 400", code, text)
	}
	for ct, want := range map[string]int{"text/plain": 415, "": 415, "application/json; charset=utf-8": 200, "application/x-ndjson": 200, "application/xml": 415} {
		if code, text := e.post(t, SalesPath, ct, auth, goodSale); code != want {
			t.Errorf("Content-Type %q: %d %s, want %d", ct, code, text, want)
		}
	}
	for _, body := range []string{"", "  \n", "[]", "[1,", "{"} {
		code, text := e.post(t, SalesPath, "application/json", auth, body)
		if code != http.StatusBadRequest && code != http.StatusUnprocessableEntity {
			t.Errorf("body %q: %d %s, want 400 or 422", body, code, text)
		}
	}
	resp, err := e.srv.Client().Get(e.srv.URL + SalesPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", resp.StatusCode)
	}
	if n := streamMsgs(t, e.js); n != 1 {
		t.Errorf("%d messages stored, want 1 (the same sale accepted twice)", n)
	}
}

func TestHTTPMixedBatch(t *testing.T) {
	e := startHTTP(t, func(c *Config) { c.Channels = []string{"web", "retail"} })
	body := "[" + strings.Join([]string{
		goodSale,
		with(goodSale, "quantity", "0"),
		with(goodSale, "line", "2"),
		`"not an object"`,
		with(with(goodSale, "channel", `"fax"`), "line", "9"),
		with(goodSale, "line", "2"), // the same identity again in this request
		with(with(goodSale, "line", "3"), "channel", `"retail"`),
	}, ",") + "]"
	code, r := e.postEvents(t, SalesPath, body)
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("status %d, want 422: %+v", code, r)
	}
	want := []struct{ status, field string }{
		{"accepted", ""}, {"invalid", "quantity"}, {"accepted", ""}, {"invalid", ""}, {"invalid", "channel"}, {"duplicate", ""}, {"accepted", ""},
	}
	if len(r.Results) != len(want) {
		t.Fatalf("%d results, want %d", len(r.Results), len(want))
	}
	for i, w := range want {
		got := r.Results[i]
		if got.Index != i || got.Status != w.status || got.Field != w.field {
			t.Errorf("result %d: %+v, want status %s field %q", i, got, w.status, w.field)
		}
		if got.Status == "accepted" && got.Seq == 0 {
			t.Errorf("result %d accepted without a stream sequence", i)
		}
	}
	if r.Accepted != 3 || r.Invalid != 3 || r.Duplicates != 1 || r.Failed != 0 {
		t.Errorf("counts %+v", r)
	}
	if n := streamMsgs(t, e.js); n != 3 {
		t.Errorf("%d messages stored, want 3", n)
	}
	if n := testutil.Metric(t, e.reg, "gemba_commerce_events_received_total", "source", "http", "outcome", "invalid"); n != 3 {
		t.Errorf("invalid counted %v, want 3", n)
	}
	// All fine now: the same sales again are duplicates, 200, nothing new stored.
	code, r = e.postEvents(t, SalesPath, "["+goodSale+","+with(goodSale, "line", "2")+"]")
	if code != http.StatusOK || r.Duplicates != 2 || r.Results[0].Seq != 1 {
		t.Fatalf("resend: %d %+v", code, r)
	}
	if n := streamMsgs(t, e.js); n != 3 {
		t.Errorf("%d messages stored after the resend, want 3", n)
	}
}

func TestHTTPNDJSONInventory(t *testing.T) {
	e := startHTTP(t, nil)
	body := goodSnap + "\n\n" + `{"schema":1,"snapshot_id":` + "\n" + with(goodSnap, "sku", `"SKU-2"`) + "\r\n" + with(goodSnap, "on_hand", `"x"`) + "\n"
	code, text := e.post(t, InventoryPath, "application/x-ndjson", "Bearer "+testToken, body)
	var r Response
	if err := json.Unmarshal([]byte(text), &r); err != nil {
		t.Fatal(err)
	}
	if code != http.StatusUnprocessableEntity || r.Accepted != 2 || r.Invalid != 2 {
		t.Fatalf("%d %s", code, text)
	}
	lines := []int{1, 3, 4, 5}
	for i, res := range r.Results {
		if res.Line != lines[i] {
			t.Errorf("result %d on line %d, want %d", i, res.Line, lines[i])
		}
	}
	if r.Results[3].Field != "on_hand" {
		t.Errorf("last line: %+v", r.Results[3])
	}
	// A sale posted to the inventory route is an invalid snapshot.
	code, r = e.postEvents(t, InventoryPath, goodSale)
	if code != http.StatusUnprocessableEntity || r.Results[0].Field != "snapshot_id" {
		t.Fatalf("sale on the inventory route: %d %+v", code, r)
	}
}

func TestHTTPPublishFailure(t *testing.T) {
	cfg := testConfig()
	cfg.HTTP.Token = config.NewSecret(testToken)
	cfg.PublishTimeout = 300 * time.Millisecond
	s := startServer(t)
	js := connect(t, s)
	if _, err := EnsureStream(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
	e := startHTTPOn(t, js, cfg)
	s.Shutdown()
	s.WaitForShutdown()
	code, text := e.post(t, SalesPath, "application/json", "Bearer "+testToken, "["+goodSale+","+with(goodSale, "line", "0")+"]")
	var r Response
	if err := json.Unmarshal([]byte(text), &r); err != nil {
		t.Fatal(err)
	}
	if code != http.StatusServiceUnavailable || r.Failed != 1 || r.Invalid != 1 || r.Results[0].Status != "failed" {
		t.Fatalf("with the server down: %d %s, want 503 with one failed, one invalid", code, text)
	}
}

// An event the inventory would refuse when it applies it (dated beyond inventory.max_future) is
// refused at the door, where its sender hears why, not accepted and then terminated by the
// consumer; the CSV import refuses such a row the same way.
func TestFutureEventRefused(t *testing.T) {
	cfg := testConfig()
	cfg.HTTP.Token = config.NewSecret(testToken)
	s := startServer(t)
	js := connect(t, s)
	if _, err := EnsureStream(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC) // goodSale's day
	h, err := Handler(pub, HandlerOptions{Config: cfg, Log: quietLog(), MaxFuture: 24 * time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	e := &httpEnv{js: js, srv: srv}
	ahead := with(with(goodSale, "time", `"2026-12-06T12:00:00Z"`), "line", "2")
	code, r := e.postEvents(t, SalesPath, "["+goodSale+","+ahead+"]")
	if code != http.StatusUnprocessableEntity || r.Accepted != 1 || r.Invalid != 1 || r.Results[1].Field != "time" ||
		!strings.Contains(r.Results[1].Error, "ahead of the hub's clock") {
		t.Fatalf("%d %+v: want the sale two days ahead refused at time", code, r)
	}
	if n := streamMsgs(t, js); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
	csvIn := "site,sku,on_hand,time\nplant1,A-100,5,2026-12-04T06:00:00Z\nplant1,B-110,5,2026-12-07T06:00:00Z\n"
	rows, rep, err := ParseInventoryCSV(strings.NewReader(csvIn), ImportOptions{Name: "erp.csv", MaxFuture: 24 * time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || len(rep.Errors) != 1 || rep.Errors[0].Line != 3 || rep.Errors[0].Column != "time" {
		t.Fatalf("rows %+v, errors %+v: want line 3 refused at time", rows, rep.Errors)
	}
}
