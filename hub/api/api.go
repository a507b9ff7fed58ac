// Package api serves the hub's state as JSON over HTTP: fleet, features, inventory and graph
// queries — what the console and the rules read.
package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

// Sources are the state the API reads; any may return nil while the hub is starting.
type Sources struct {
	Fleet     func() *fleet.Fleet
	Features  func() *features.Store
	Inventory func() *inventory.Store
	Graph     func() *graph.Graph
}

// Handler returns the read API under /api/v1/. With a non-empty token every request must carry
// "Authorization: Bearer <token>".
func Handler(src Sources, token string) http.Handler {
	a := &api{src: src}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/fleet", a.fleet)
	mux.HandleFunc("GET /api/v1/fleet/{site}/{agent}", a.agent)
	mux.HandleFunc("GET /api/v1/features", a.features)
	mux.HandleFunc("GET /api/v1/features/{name}/{key}", a.feature)
	mux.HandleFunc("GET /api/v1/inventory", a.inventory)
	mux.HandleFunc("GET /api/v1/inventory/{site}/{sku}", a.position)
	mux.HandleFunc("GET /api/v1/graph", a.graphInfo)
	mux.HandleFunc("GET /api/v1/graph/{query}/{id}", a.graphQuery)
	mux.HandleFunc("GET /api/v1/graph/paths", a.graphPaths)
	if token == "" {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !config.TokenEqual(got, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gemba-hub"`)
			writeErr(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

type api struct{ src Sources }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func starting(w http.ResponseWriter) {
	writeErr(w, http.StatusServiceUnavailable, "hub is starting: state not loaded yet")
}

// Paging of the lists (as inventory and quality page): limit items, defaultPage unless the query
// says, at most maxPage, after the last one of the previous page; a full page carries next, the
// next page's whole query.
const (
	defaultPage = 1000
	maxPage     = 10000
)

// pageLimit reads limit; false when it is malformed (answered 400).
func pageLimit(w http.ResponseWriter, q url.Values) (int, bool) {
	l := q.Get("limit")
	if l == "" {
		return defaultPage, true
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > maxPage {
		writeErr(w, http.StatusBadRequest, "limit: want 1.."+strconv.Itoa(maxPage))
		return 0, false
	}
	return n, true
}

// nextQuery is the next page's whole query: the cursor, then the parameters of q named in keep
// that are set, each value escaped (an id may hold "&", "+" or "#").
func nextQuery(q, cursor url.Values, keep ...string) string {
	for _, k := range keep {
		if v := q.Get(k); v != "" {
			cursor.Set(k, v)
		}
	}
	return cursor.Encode()
}

func (a *api) fleet(w http.ResponseWriter, r *http.Request) {
	f := a.src.Fleet()
	if f == nil {
		starting(w)
		return
	}
	q := r.URL.Query()
	limit, ok := pageLimit(w, q)
	if !ok {
		return
	}
	page := f.Page(q.Get("after_site"), q.Get("after_agent"), limit) // by site, then agent
	out := map[string]any{"agents": page}
	if len(page) == limit {
		last := page[len(page)-1]
		out["next"] = nextQuery(q, url.Values{"after_site": {last.Site}, "after_agent": {last.Agent.Agent}}, "limit")
	}
	writeJSON(w, out)
}

func (a *api) agent(w http.ResponseWriter, r *http.Request) {
	f := a.src.Fleet()
	if f == nil {
		starting(w)
		return
	}
	v, ok := f.Get(r.PathValue("site"), r.PathValue("agent"))
	if !ok {
		writeErr(w, http.StatusNotFound, "no heartbeat from agent "+r.PathValue("agent")+" at site "+r.PathValue("site"))
		return
	}
	writeJSON(w, v)
}

func (a *api) features(w http.ResponseWriter, r *http.Request) {
	s := a.src.Features()
	if s == nil {
		starting(w)
		return
	}
	q := r.URL.Query()
	limit, ok := pageLimit(w, q)
	if !ok {
		return
	}
	defs, ver := s.Definitions()
	k, afterName, afterKey := q.Get("key"), q.Get("after_name"), q.Get("after_key")
	name := q.Get("name")
	page, named := s.Page(name, k, afterName, afterKey, limit) // by name, then key
	if name != "" && !named && !slices.ContainsFunc(defs, func(d features.Definition) bool { return d.Name == name }) {
		// A typo must not read as "no values yet" (values of a definition since removed are still listed).
		names := make([]string, len(defs))
		for i, d := range defs {
			names[i] = d.Name
		}
		writeErr(w, http.StatusNotFound, "no feature "+strconv.Quote(name)+": the definitions are "+strings.Join(names, ", "))
		return
	}
	out := map[string]any{"definitions_version": ver, "definitions": defs, "values": page}
	if len(page) == limit {
		last := page[len(page)-1]
		out["next"] = nextQuery(q, url.Values{"after_name": {last.Name}, "after_key": {last.Key}}, "name", "key", "limit")
	}
	writeJSON(w, out)
}

func (a *api) feature(w http.ResponseWriter, r *http.Request) {
	s := a.src.Features()
	if s == nil {
		starting(w)
		return
	}
	v, ok := s.Get(r.PathValue("name"), r.PathValue("key"))
	if !ok {
		writeErr(w, http.StatusNotFound, "no value of feature "+r.PathValue("name")+" for "+r.PathValue("key"))
		return
	}
	writeJSON(w, v)
}

func (a *api) inventory(w http.ResponseWriter, r *http.Request) {
	s := a.src.Inventory()
	if s == nil {
		starting(w)
		return
	}
	q := r.URL.Query()
	limit, ok := pageLimit(w, q)
	if !ok {
		return
	}
	f := inventory.Filter{Site: q.Get("site"), SKU: q.Get("sku"), AfterSite: q.Get("after_site"), AfterSKU: q.Get("after_sku"), Limit: limit}
	list := s.List(f)
	out := map[string]any{"positions": list}
	if len(list) == f.Limit {
		last := list[len(list)-1]
		out["next"] = nextQuery(q, url.Values{"after_site": {last.Site}, "after_sku": {last.SKU}}, "site", "sku", "limit")
	}
	writeJSON(w, out)
}

func (a *api) position(w http.ResponseWriter, r *http.Request) {
	s := a.src.Inventory()
	if s == nil {
		starting(w)
		return
	}
	p, ok := s.Get(r.PathValue("sku"), r.PathValue("site"))
	if !ok {
		writeErr(w, http.StatusNotFound, "no inventory position for "+r.PathValue("sku")+" at "+r.PathValue("site"))
		return
	}
	writeJSON(w, p)
}

func (a *api) graphInfo(w http.ResponseWriter, _ *http.Request) {
	g := a.src.Graph()
	if g == nil {
		writeErr(w, http.StatusNotFound, "no knowledge graph configured (graph.file)")
		return
	}
	writeJSON(w, map[string]any{"version": g.Version(), "hash": g.Hash(), "sites": g.Sites(), "lines": g.Lines(),
		"skus": g.SKUs(), "channels": g.Channels(), "segments": g.Segments()})
}

// graphQuery answers /graph/<query>/<id>: producers, channels, segments, substitutes, complements
// (of a SKU), skus (of a line), line (of a signal), site (of a line).
func (a *api) graphQuery(w http.ResponseWriter, r *http.Request) {
	g := a.src.Graph()
	if g == nil {
		writeErr(w, http.StatusNotFound, "no knowledge graph configured (graph.file)")
		return
	}
	id := r.PathValue("id")
	var res []graph.Result
	var err error
	one := func(x graph.Result, e error) ([]graph.Result, error) { return []graph.Result{x}, e }
	switch r.PathValue("query") {
	case "producers":
		res, err = g.ProducersOf(id)
	case "channels":
		res, err = g.ChannelsOf(id)
	case "segments":
		res, err = g.SegmentsOf(id)
	case "substitutes":
		res, err = g.Substitutes(id)
	case "complements":
		res, err = g.Complements(id)
	case "skus":
		res, err = g.SKUsOf(id)
	case "line":
		res, err = one(g.LineOfSignal(id))
	case "site":
		res, err = one(g.SiteOfLine(id))
	default:
		writeErr(w, http.StatusNotFound, "unknown graph query "+r.PathValue("query")+
			" (producers, channels, segments, substitutes, complements, skus, line, site)")
		return
	}
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, graph.ErrUnknown) {
			code = http.StatusNotFound
		}
		writeErr(w, code, err.Error())
		return
	}
	writeJSON(w, map[string]any{"graph_version": g.Version(), "graph_hash": g.Hash(), "results": withPaths(res)})
}

func (a *api) graphPaths(w http.ResponseWriter, r *http.Request) {
	g := a.src.Graph()
	if g == nil {
		writeErr(w, http.StatusNotFound, "no knowledge graph configured (graph.file)")
		return
	}
	q := r.URL.Query()
	depth := 6
	if d := q.Get("max_depth"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 || n > 8 {
			writeErr(w, http.StatusBadRequest, "max_depth: want 1..8")
			return
		}
		depth = n
	}
	for _, k := range []string{"from", "to"} {
		if q.Get(k) == "" {
			writeErr(w, http.StatusBadRequest, k+": required (a node id)")
			return
		}
	}
	paths, truncated, err := g.Paths(q.Get("from"), q.Get("to"), depth)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, graph.ErrUnknown) {
			code = http.StatusNotFound // as /graph/{query}/{id}
		}
		writeErr(w, code, err.Error())
		return
	}
	out := make([]map[string]any, len(paths))
	for i, p := range paths {
		out[i] = map[string]any{"steps": p, "text": p.String()}
	}
	writeJSON(w, map[string]any{"paths": out, "truncated": truncated})
}

// withPaths adds the printed path to each result, as explanations show it.
func withPaths(rs []graph.Result) []map[string]any {
	out := make([]map[string]any, len(rs))
	for i, r := range rs {
		out[i] = map[string]any{"id": r.ID, "kind": r.Kind, "site": r.Site, "path": r.Path, "text": r.String()}
	}
	return out
}
