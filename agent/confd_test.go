package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/config"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConfDirMerges: conf.d files add collectors after the main file's, in name order; the
// result is the config one file with all of them gives (same version).
func TestConfDirMerges(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"agent.yaml":             baseConfig + "collectors:\n  - {name: a, type: scripted, key: k}\n",
		"conf.d/20-broker.yml":   "collectors:\n  - {name: c, type: scripted, key: k}\n",
		"conf.d/10-plc.yaml":     "collectors:\n  - {name: b, type: scripted, key: k}\n",
		"conf.d/README.txt":      "not yaml: ignored",
		"conf.d/.hidden.yaml":    "garbage: [",
		"conf.d/empty.yaml":      "",
		"conf.d/sub/deeper.yaml": "garbage: [",
	})
	cfg, err := LoadDir(filepath.Join(dir, "agent.yaml"), filepath.Join(dir, "conf.d"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range cfg.Collectors {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "a,b,c" {
		t.Fatalf("collectors %v, want a,b,c", names)
	}
	one := mustParse(t, baseConfig+`collectors:
  - {name: a, type: scripted, key: k}
  - {name: b, type: scripted, key: k}
  - {name: c, type: scripted, key: k}
`, nil)
	if cfg.Version() != one.Version() {
		t.Fatalf("version %s, one file gives %s", cfg.Version(), one.Version())
	}
	// A main file without collectors, and without a dir: Load's result.
	writeFiles(t, dir, map[string]string{"bare.yaml": baseConfig})
	cfg, err = LoadDir(filepath.Join(dir, "bare.yaml"), filepath.Join(dir, "conf.d"), noEnv)
	if err != nil || len(cfg.Collectors) != 2 {
		t.Fatalf("bare main file: %v, %d collectors", err, len(cfg.Collectors))
	}
}

// TestConfDirProblemsNameTheirFile: every problem says which file, which line, and the path in
// that file; a collector name used in two files names both places.
func TestConfDirProblemsNameTheirFile(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "agent.yaml")
	cd := filepath.Join(dir, "conf.d")
	writeFiles(t, dir, map[string]string{
		"agent.yaml": baseConfig + "collectors:\n  - {name: a, type: scripted, key: k}\n  - {name: ok, type: scripted, key: k}\n",
		"conf.d/10-plc.yaml": `collectors:
  - name: plc
    type: scripted
    key: ${UNSET_FOR_TEST}
`,
		"conf.d/20-broker.yaml": `collectors:
  - {name: b, type: scripted, key: k}
  - {name: a, type: scripted, key: k}
  - {name: q, type: nosuch}
`,
		"conf.d/30-misplaced.yaml": "uplink: {heartbeat: 1s}\n",
	})
	_, err := LoadDir(main, cd, noEnv)
	got := config.Describe(main, err)
	want := []string{
		filepath.Join(cd, "10-plc.yaml") + ":4: collectors[0].key: ${UNSET_FOR_TEST}: environment variable is not set",
		filepath.Join(cd, "20-broker.yaml") + `:3: collectors[1].name: duplicate collector name "a" (also at ` + main + ":6)",
		filepath.Join(cd, "20-broker.yaml") + `:4: collectors[2].type: unknown collector type "nosuch"`,
		filepath.Join(cd, "30-misplaced.yaml") + ":1: uplink: a conf.d file holds collectors only; uplink belongs in the main file " + main,
	}
	if len(got) != len(want) {
		t.Fatalf("problems:\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %d:\n got %s\nwant %s…", i, got[i], want[i])
		}
	}

	// A syntax error stops before decoding, naming the file.
	writeFiles(t, dir, map[string]string{"conf.d/20-broker.yaml": "collectors: [\n"})
	_, err = LoadDir(main, cd, noEnv)
	got = config.Describe(main, err)
	if !strings.Contains(strings.Join(got, "\n"), filepath.Join(cd, "20-broker.yaml")+":1:") {
		t.Fatalf("syntax error: %q", got)
	}
	if _, err := LoadDir(main, filepath.Join(dir, "missing"), noEnv); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing dir: %v", err)
	}
}
