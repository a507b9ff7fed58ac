package graph

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/config"
)

// The committed corpus under testdata/fuzz/FuzzLoad is written by
// `go test ./hub/state/graph -run TestFuzzCorpus -update-corpus` from fuzzSeeds (plus crashers the
// fuzzer found, kept as written). Without the flag the test checks the seeds are there.
var updateCorpus = flag.Bool("update-corpus", false, "rewrite the generated seed corpus under testdata/fuzz")

const corpusDir = "testdata/fuzz/FuzzLoad"

// fuzzSeeds are documents that reach every part of the loader: the shipped graphs, broken YAML,
// alias bombs, deep nesting and each kind of validation problem.
func fuzzSeeds(t testing.TB) map[string]string {
	seeds := map[string]string{
		"query":              queryDoc,
		"reordered":          reorderedDoc,
		"empty":              "",
		"only-version":       "version: v\n",
		"broken-flow":        "version: v1\nskus: [{id: A}\nchannels: []\n",
		"broken-indent":      "version: v1\nskus:\n  - id: A\n   name: x\n",
		"tab-indent":         "version: v1\nskus:\n\t- id: A\n",
		"two-documents":      "version: v1\n---\nversion: v2\n",
		"bad-utf8":           "version: v1\nskus: [{id: \"A\xff\"}]\n",
		"bom":                "\ufeffversion: v1\n",
		"nul":                "version: v1\x00\n",
		"control-in-id":      "version: v1\nskus: [{id: \"A\\u0001\"}]\n",
		"unknown-field":      "version: v1\nskus:\n  - {id: A, nmae: x}\nsku: []\n",
		"wrong-types":        "version: v1\nskus: {id: A}\nchannels:\n  - {id: [web]}\nedges:\n  - {kind: produces, from: {a: 1}, to: A}\n",
		"duplicate-id":       "version: v1\nchannels: [{id: web}]\nsegments: [{id: b2c}, {id: web}]\n",
		"duplicate-key":      "version: v1\nversion: v2\nskus: []\nskus: []\n",
		"dangling-edge":      nodesDoc + "edges:\n  - {kind: produces, from: line1, to: SKU-9}\n",
		"wrong-kind-edge":    nodesDoc + "edges:\n  - {kind: sold_via, from: web, to: SKU-1}\n",
		"unknown-edge-kind":  nodesDoc + "edges:\n  - {kind: produced_by, from: nowhere, to: SKU-1}\n",
		"self-loop":          nodesDoc + "edges: [{kind: complements, from: SKU-1, to: SKU-1}]\n",
		"symmetric-dup":      nodesDoc + "edges:\n  - {kind: substitutes, from: SKU-1, to: SKU-2}\n  - {kind: substitutes, from: SKU-2, to: SKU-1}\n",
		"missing-parents":    "version: v1\nsites: [{id: p}]\nlines: [{id: l, site: p9}]\nmachines: [{id: m, line: p}]\nsignals: [{id: s, machine: l}]\n",
		"bad-ids":            "version: v1\nsites: [{id: \"plant 1\"}]\nlines: [{id: line.1, site: \"plant 1\"}]\nmachines: [{id: .m, line: line.1}]\nsignals: [{id: a..b, machine: .m}]\nskus: [{id: \"*\"}, {id: \">\"}]\n",
		"merge-key":          "version: v1\nx: &x {name: a}\nskus: [{<<: *x, id: A}]\n",
		"anchors":            "version: &v v1\nskus: [{id: &a A, name: *v}, {id: B}]\nedges: [{kind: substitutes, from: *a, to: B}]\n",
		"self-alias":         "version: v1\nskus: &s [{id: A}, *s]\n",
		"dollar":             "version: '${X}'\nskus: [{id: $A, name: $$}]\n",
		"non-string-scalars": "version: 1.5\nskus: [{id: 1}, {id: true}, {id: 0x10}, {id: null}, {id: ~}]\n",
		"document-list":      "- a\n- b\n",
		"document-scalar":    "just text\n",
	}
	for _, f := range []string{"graph.example.yaml", "demo/graph.yaml"} {
		data, err := os.ReadFile(filepath.Join(configsDir, f))
		if err != nil {
			t.Fatal(err)
		}
		seeds["config-"+strings.ReplaceAll(strings.TrimSuffix(f, ".yaml"), "/", "-")] = string(data)
	}
	var b strings.Builder
	b.WriteString("version: v1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 10; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	seeds["alias-bomb"] = b.String()
	b.Reset()
	b.WriteString("version: v1\nskus: &big [")
	for i := range 500 {
		fmt.Fprintf(&b, "{id: S%d, name: %s}, ", i, strings.Repeat("n", 40))
	}
	b.WriteString("]\nchannels: *big\nsegments: *big\n")
	seeds["huge-anchor"] = b.String()
	seeds["deep-flow"] = "version: v1\nskus: " + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + "\n"
	seeds["deep-map"] = "version: v1\nx: " + strings.Repeat("{a: ", 2000) + "b" + strings.Repeat("}", 2000) + "\n"
	var deep strings.Builder
	deep.WriteString("version: v1\nskus:\n")
	for i := range 300 {
		deep.WriteString(strings.Repeat(" ", 2*i+2) + "- \n")
	}
	seeds["deep-block"] = deep.String()
	return seeds
}

func TestFuzzCorpus(t *testing.T) {
	seeds := fuzzSeeds(t)
	if *updateCorpus {
		if err := os.MkdirAll(corpusDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, doc := range seeds {
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", doc)
			if err := os.WriteFile(filepath.Join(corpusDir, "seed-"+name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name := range seeds {
		if _, err := os.Stat(filepath.Join(corpusDir, "seed-"+name)); err != nil {
			t.Errorf("seed %s is not in the corpus (run with -update-corpus): %v", name, err)
		}
	}
}

// FuzzLoad: Load never panics; what it refuses it explains as problems; what it accepts is a
// consistent graph (every parent and edge end exists with the right kind, queries answer with
// real paths) that formats and loads back to the same hash.
func FuzzLoad(f *testing.F) {
	for _, doc := range fuzzSeeds(f) {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Load(data)
		if err != nil {
			var ps config.Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error %T is not config.Problems: %v", err, err)
			}
			for _, p := range ps {
				if p.Msg == "" {
					t.Fatalf("problem without a message: %+v", p)
				}
			}
			return
		}
		if g.Version() == "" || len(g.Hash()) != 64 {
			t.Fatalf("loaded graph without version or hash: %q %q", g.Version(), g.Hash())
		}
		checkConsistent(t, g)
		var ids []string
		for k := KindSite; k < numKinds; k++ {
			for _, n := range g.Nodes(k) {
				ids = append(ids, n.ID)
			}
		}
		if len(ids) > 1 {
			ps, _, err := g.Paths(ids[0], ids[len(ids)-1], 4)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ps {
				checkPath(t, g, p)
			}
		}
	})
}
