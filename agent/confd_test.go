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

// TestConfDirFollowsSymlinks: a conf.d entry that is a symlink to a YAML file (the
// sites-available/sites-enabled pattern, a Kubernetes ConfigMap mount, config management) is one
// of "every *.yaml file in DIR": its collectors are merged, not silently left out. A symlink to a
// directory is a subdirectory, ignored as such.
func TestConfDirFollowsSymlinks(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"agent.yaml":           baseConfig + "collectors:\n  - {name: a, type: scripted, key: k}\n",
		"available/press.yaml": "collectors:\n  - {name: press, type: scripted, key: k}\n",
		"available/sub/x.yaml": "garbage: [",
		"conf.d/10-plc.yaml":   "collectors:\n  - {name: b, type: scripted, key: k}\n",
	})
	if err := os.Symlink(filepath.Join(dir, "available", "press.yaml"), filepath.Join(dir, "conf.d", "20-press.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "available", "sub"), filepath.Join(dir, "conf.d", "sub.yaml")); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadDir(filepath.Join(dir, "agent.yaml"), filepath.Join(dir, "conf.d"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range cfg.Collectors {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "a,b,press" {
		t.Fatalf("collectors %v, want a,b,press (conf.d/20-press.yaml is a symlink to a file)", names)
	}
}

// TestConfDirDanglingSymlink: a conf.d link to a file that is gone is a problem naming it, not a
// PLC silently left out.
func TestConfDirDanglingSymlink(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"agent.yaml": baseConfig, "conf.d/10-plc.yaml": "collectors: []\n"})
	link := filepath.Join(dir, "conf.d", "20-press.yaml")
	if err := os.Symlink(filepath.Join(dir, "gone.yaml"), link); err != nil {
		t.Fatal(err)
	}
	_, err := LoadDir(filepath.Join(dir, "agent.yaml"), filepath.Join(dir, "conf.d"), noEnv)
	if err == nil || !strings.Contains(strings.Join(config.Describe(filepath.Join(dir, "agent.yaml"), err), "\n"), link) {
		t.Fatalf("err %v, want a problem naming %s", err, link)
	}
}

// TestConfDirDuplicateSignalNamesTheOtherFile: a signal produced by collectors of two files names
// where the first one is. The merged index ("collectors[2]") is no place in any file.
func TestConfDirDuplicateSignalNamesTheOtherFile(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "agent.yaml")
	cd := filepath.Join(dir, "conf.d")
	sub := func(name, client string) string {
		return "  - {name: " + name + `, type: mqtt, broker: "tcp://127.0.0.1:1", client_id: ` + client +
			", subscriptions: [{topic: t/" + name + ", format: value, signal: line.temp}]}\n"
	}
	writeFiles(t, dir, map[string]string{
		"agent.yaml":     baseConfig + "collectors:\n  - {name: a, type: scripted, key: k}\n  - {name: b, type: scripted, key: k}\n",
		"conf.d/10.yaml": "collectors:\n" + sub("c", "x"),
		"conf.d/20.yaml": "collectors:\n" + sub("d", "y"),
	})
	cfg, err := LoadDir(main, cd, noEnv)
	if err == nil {
		t.Fatalf("valid, with collectors %d; want a duplicate signal", len(cfg.Collectors))
	}
	got := strings.Join(config.Describe(main, err), "\n")
	want := filepath.Join(cd, "20.yaml") + `:2: collectors[0].subscriptions[0].signal: signal "line.temp" is also produced by collector "c" (at ` + filepath.Join(cd, "10.yaml") + ":2)"
	if !strings.Contains(got, want) {
		t.Fatalf("problems:\n%s\nwant one starting %s", got, want)
	}
}

// TestConfDirDuplicateCollectorsKey: a conf.d file with two collectors keys is a duplicate key,
// as it is in the main file (strict: duplicate keys are errors), not two lists quietly merged.
func TestConfDirDuplicateCollectorsKey(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "agent.yaml")
	cd := filepath.Join(dir, "conf.d")
	writeFiles(t, dir, map[string]string{
		"agent.yaml":     baseConfig,
		"conf.d/10.yaml": "collectors:\n  - {name: a, type: scripted, key: k}\ncollectors:\n  - {name: b, type: scripted, key: k}\n",
	})
	cfg, err := LoadDir(main, cd, noEnv)
	if err == nil {
		t.Fatalf("valid, with %d collectors; want a duplicate key", len(cfg.Collectors))
	}
	got := strings.Join(config.Describe(main, err), "\n")
	if want := filepath.Join(cd, "10.yaml") + `:3: collectors: duplicate key "collectors"`; !strings.Contains(got, want) {
		t.Fatalf("problems:\n%s\nwant %s", got, want)
	}
}

// TestConfDirSecondDocumentIsAProblem: a file with a second YAML document ("---", two PLC files
// pasted into one) had everything after the first silently dropped: a PLC nobody collected from,
// with validate saying "valid". It is a problem at the line of the second document.
func TestConfDirSecondDocumentIsAProblem(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "agent.yaml")
	cd := filepath.Join(dir, "conf.d")
	writeFiles(t, dir, map[string]string{
		"agent.yaml":     "---\n" + baseConfig,
		"conf.d/10.yaml": "collectors:\n  - {name: a, type: scripted, key: k}\n---\ncollectors:\n  - {name: b, type: scripted, key: k}\n",
		"conf.d/20.yaml": "collectors:\n  - {name: c, type: scripted, key: k}\n---\n",
	})
	cfg, err := LoadDir(main, cd, noEnv)
	if err == nil {
		t.Fatalf("valid, with %d collectors; want a problem with the second document", len(cfg.Collectors))
	}
	got := config.Describe(main, err)
	want := filepath.Join(cd, "10.yaml") + ":3: "
	if len(got) != 1 || !strings.HasPrefix(got[0], want) || !strings.Contains(got[0], "document") {
		t.Fatalf("problems:\n%s\nwant one, starting %s, about the second document", strings.Join(got, "\n"), want)
	}
	// The main file alone, as Load reads it.
	if _, err := Parse([]byte(baseConfig+"---\nagent: {id: other}\n"), noEnv); err == nil || !strings.Contains(err.Error(), "second YAML document") {
		t.Fatalf("main file with a second document: %v", err)
	}
}
