package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/config"
)

// LoadDir is Load with a conf.d directory: every *.yaml or *.yml file in dir (sorted by name;
// other files and subdirectories are ignored) holds a `collectors:` list, typically one PLC or
// broker per file, appended to the main file's collectors. The merged document is validated as
// one (a collector name used in two files is a duplicate), and every problem names its file, its
// line and its path within that file. An empty dir is Load.
func LoadDir(file, dir string, lookup func(string) (string, bool)) (*Config, error) {
	data, err := config.ReadFile(file, config.DefaultMaxSize)
	if err != nil {
		return nil, err
	}
	var parts []string
	if dir != "" {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("config dir: %w", err)
		}
		for _, e := range ents {
			ext := filepath.Ext(e.Name())
			if strings.HasPrefix(e.Name(), ".") || (ext != ".yaml" && ext != ".yml") {
				continue
			}
			p := filepath.Join(dir, e.Name())
			regular := e.Type().IsRegular()
			if e.Type()&os.ModeSymlink != 0 {
				// A link to a file (sites-enabled style, a Kubernetes ConfigMap) is one of them; a
				// dangling one is read and reported below rather than silently left out.
				fi, err := os.Stat(p)
				regular = err != nil || fi.Mode().IsRegular()
			}
			if regular {
				parts = append(parts, p)
			}
		}
		sort.Strings(parts)
	}

	d := config.NewDecoder(config.WithEnv(lookup))
	root, err := d.ParseFile(file, data)
	fatal := err != nil
	if root == nil {
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	seq := collectorsSeq(root)
	// spans[i] is the first merged index of file i's collectors; the main file's come first.
	type span struct {
		file  string
		first int
	}
	spans := []span{{file, 0}}
	for _, p := range parts {
		pdata, err := config.ReadFile(p, config.DefaultMaxSize)
		if err != nil {
			d.FileErrorf(p, nil, "", "%v", err)
			fatal = true
			continue
		}
		proot, err := d.ParseFile(p, pdata)
		fatal = fatal || err != nil
		if proot == nil {
			continue // empty, or a syntax problem already recorded
		}
		if proot.Kind != yaml.MappingNode {
			d.FileErrorf(p, proot, "", "a conf.d file holds a mapping with a collectors list")
			continue
		}
		seen := false
		for i := 0; i+1 < len(proot.Content); i += 2 {
			k, v := proot.Content[i], proot.Content[i+1]
			if k.Value != "collectors" {
				d.FileErrorf(p, k, k.Value, "a conf.d file holds collectors only; %s belongs in the main file %s", k.Value, file)
				continue
			}
			if seen {
				// As in the main file: a second list is a mistake, not more collectors.
				d.FileErrorf(p, k, "collectors", "duplicate key %q", k.Value)
				continue
			}
			seen = true
			if v.Kind != yaml.SequenceNode {
				if v.Tag != "!!null" {
					d.FileErrorf(p, v, "collectors", "expected a list of collectors")
				}
				continue
			}
			if seq == nil {
				d.FileErrorf(p, v, "collectors", "not merged: collectors in the main file %s is not a list", file)
				continue
			}
			spans = append(spans, span{p, len(seq.Content)})
			seq.Content = append(seq.Content, v.Content...)
		}
	}
	if fatal {
		// Unreadable or unparsable files: decoding the rest would only add noise. (Problems of
		// values, such as an unset ${VAR}, are reported with everything the decoder finds.)
		return nil, d.Err()
	}
	d.SetFileOf(func(path string) (string, string) {
		m := collectorIndex.FindStringSubmatch(path)
		if m == nil {
			return file, path
		}
		k, _ := strconv.Atoi(m[1])
		s := spans[0]
		for _, sp := range spans[1:] {
			if k >= sp.first {
				s = sp
			}
		}
		return s.file, "collectors[" + strconv.Itoa(k-s.first) + "]" + path[len(m[0]):]
	})
	cfg := DefaultConfig()
	d.Decode(root, "", &cfg)
	if err := d.Err(); err != nil {
		return nil, err
	}
	return finish(&cfg)
}

var collectorIndex = regexp.MustCompile(`^collectors\[(\d+)\]`)

// collectorsSeq returns the main document's collectors list, adding an empty one when the file
// has none (or `collectors:` with nothing under it); nil when it is something else, which the
// decoder reports.
func collectorsSeq(root *yaml.Node) *yaml.Node {
	if root.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "collectors" {
			continue
		}
		v := root.Content[i+1]
		switch {
		case v.Kind == yaml.SequenceNode:
			return v
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			*v = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: v.Line, Column: v.Column}
			return v
		}
		return nil
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "collectors"}, seq)
	return seq
}
