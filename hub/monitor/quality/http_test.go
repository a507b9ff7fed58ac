package quality

import (
	"encoding/json"
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
