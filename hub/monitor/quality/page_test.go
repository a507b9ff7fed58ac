package quality

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// A page of the quality list costs what its keys cost, not what the whole fleet's do (a hub
// tracks up to 200,000 keys, and a console polls the list), and paging through it, with or without
// breach=1 and with any limit, gives exactly the whole list.
func TestListPageCostsItsPage(t *testing.T) {
	now := time.Now().UTC()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A fixed clock: a stale key's reason names its age.
	m, err := Open(ctx, jetStream(t), Options{Config: testConfig(), Definitions: defs, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	var seq uint64
	value := func(feature, key string, at time.Time) {
		seq++
		fo := folder{m: m, at: now}
		m.mu.Lock()
		defer m.mu.Unlock()
		fo.chunk("a1", signal.StreamFeatures, "i1", seq, seq)
		fo.value(feature, []byte(key), 1, at.UnixNano(), false)
	}
	for i := range 1200 {
		at := now
		if i%2 == 1 {
			at = now.Add(-2 * time.Hour) // stale (max age 10m and 1h)
		}
		value("temp", fmt.Sprintf("line%04d.oven.temp", i), at)
		if i%3 == 0 {
			value("units", fmt.Sprintf("SKU-%04d", i), at)
		}
	}
	h := m.Handler()
	get := func(q string) (keys []Quality, next string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/quality?"+q, nil))
		var page struct {
			Keys []Quality
			Next string
		}
		if w.Code != 200 {
			t.Fatalf("%s: %d %s", q, w.Code, w.Body)
		}
		if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return page.Keys, page.Next
	}
	whole := func(feature string, breach bool) []Quality {
		var out []Quality
		for _, q := range m.List(feature) {
			if !breach || !q.OK() {
				out = append(out, q)
			}
		}
		return out
	}
	for _, c := range []struct {
		feature string
		breach  bool
		limit   int
	}{{"", false, 7}, {"", true, 333}, {"temp", true, 1000}, {"units", false, 3}, {"units", true, 10000}} {
		q := url.Values{"limit": {fmt.Sprint(c.limit)}}
		if c.feature != "" {
			q.Set("feature", c.feature)
		}
		if c.breach {
			q.Set("breach", "1")
		}
		var got []Quality
		for next := q.Encode(); next != ""; {
			var keys []Quality
			keys, next = get(next)
			got = append(got, keys...)
		}
		want := whole(c.feature, c.breach)
		got, want = jsonRound(t, got), jsonRound(t, want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("feature %q breach %v limit %d: paging gave %d keys, the whole list %d", c.feature, c.breach, c.limit, len(got), len(want))
		}
	}
	// Building a stale key's status formats its reason: a page of ten that built every key's
	// would allocate thousands of times.
	allocs := testing.AllocsPerRun(5, func() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/quality?breach=1&limit=10", nil))
	})
	if allocs > 300 {
		t.Errorf("a page of 10 keys of 1600 allocated %v times: every key's status was built", allocs)
	}
}

// jsonRound is qs as the API's JSON gives them back.
func jsonRound(t *testing.T, qs []Quality) []Quality {
	t.Helper()
	b, err := json.Marshal(qs)
	if err != nil {
		t.Fatal(err)
	}
	var out []Quality
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
