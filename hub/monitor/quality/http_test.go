package quality

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	js := jetStream(t)
	c := &clock{}
	m := open(t, js, testConfig(), &sink{}, c)
	obs := m.Observer()
	a, b := &agent{id: "a8", inc: "i1"}, &agent{id: "a9", inc: "i1"}
	now := time.Now()
	obs.Observe(a.batch(mean("line8.oven.temp", now, 10)))
	obs.Observe(b.batch(mean("line9.oven.temp", now.Add(-time.Hour), 10))) // stale
	flush(t, obs)
	waitFolded(t, m, 2)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	get := func(path string, out any) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
		return resp.StatusCode
	}
	var list struct{ Keys []Quality }
	if code := get("/api/v1/quality?feature=temp", &list); code != 200 || len(list.Keys) != 2 {
		t.Errorf("list: %d %+v", code, list)
	}
	if code := get("/api/v1/quality?feature=temp&breach=1", &list); code != 200 || len(list.Keys) != 1 || list.Keys[0].Key != "line9.oven.temp" || !list.Keys[0].Stale {
		t.Errorf("breaches: %d %+v", code, list)
	}
	var one Quality
	if code := get("/api/v1/quality?feature=temp&key=line8.oven.temp", &one); code != 200 || one.Stale || one.Agent != "a8" {
		t.Errorf("one: %d %+v", code, one)
	}
	if code := get("/api/v1/quality?feature=nope", nil); code != 404 {
		t.Errorf("unknown feature: %d", code)
	}
	resp, err := http.Post(srv.URL+"/api/v1/quality", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

// The list is bounded (a hub tracks up to 200,000 keys: every one in one answer is tens of MiB
// built under the monitor's lock) and pages through every key once; a malformed breach or limit is
// refused rather than read as something else; an agent with no stream is a 404 like an unknown key.
func TestHandlerBounds(t *testing.T) {
	m := open(t, jetStream(t), testConfig(), nil, nil)
	f := &folds{m: m}
	at := time.Now().UTC()
	for i := range 2500 {
		f.value(at, fmt.Sprintf("line%04d.oven.temp", i), 1)
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	get := func(path string, out any) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
		return resp.StatusCode
	}
	seen := map[string]bool{}
	q, pages := "feature=temp", 0
	for q != "" && pages < 10 {
		var page struct {
			Keys []Quality
			Next string
		}
		if code := get("/api/v1/quality?"+q, &page); code != 200 || len(page.Keys) > 1000 {
			t.Errorf("page %d: %d, %d keys", pages, code, len(page.Keys))
			break
		}
		for _, k := range page.Keys {
			if seen[k.Key] {
				t.Fatalf("%s listed twice", k.Key)
			}
			seen[k.Key] = true
		}
		q, pages = page.Next, pages+1
	}
	if len(seen) != 2500 || pages != 3 {
		t.Errorf("%d keys in %d pages, want 2500 in 3", len(seen), pages)
	}
	for _, p := range []string{"?feature=temp&limit=0", "?feature=temp&limit=10001", "?feature=temp&breach=maybe"} {
		if code := get("/api/v1/quality"+p, nil); code != 400 {
			t.Errorf("%s: %d, want 400", p, code)
		}
	}
	var none struct{ Keys []Quality }
	if code := get("/api/v1/quality?feature=temp&breach=0&limit=5", &none); code != 200 || len(none.Keys) != 5 {
		t.Errorf("breach=0: %d, %d keys, want every key (5)", code, len(none.Keys))
	}
	if code := get("/api/v1/quality/gaps?agent=nobody", nil); code != 404 {
		t.Errorf("gaps of an unknown agent: %d, want 404", code)
	}
	if code := get("/api/v1/quality/gaps?agent=a1", nil); code != 200 {
		t.Errorf("gaps of a1: %d", code)
	}
}
