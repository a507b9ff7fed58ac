package config

import (
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// Limits that keep a hostile or mistaken document from exhausting memory. yaml.v3 parses about
// 25 bytes of heap per byte of YAML, and an alias is a pointer our decoder follows, so a few
// hundred bytes of nested aliases decode as millions of nodes.
const (
	// DefaultMaxSize is the largest document Unmarshal, Parse and ReadFile accept unless told
	// otherwise (WithMaxSize): ~100 MB of parser heap, far above any real agent config.
	DefaultMaxSize = 4 << 20
	// DefaultMaxAliasNodes is how many nodes alias expansion may add to a document
	// (WithMaxAliasNodes): plenty for shared settings, far below what exhausts a gateway.
	DefaultMaxAliasNodes = 100_000
)

// ErrTooLarge is wrapped by errors about documents over the size limit.
var ErrTooLarge = errors.New("larger than the limit")

// WithMaxSize sets the largest document accepted, in bytes.
func WithMaxSize(n int64) Option { return func(d *Decoder) { d.maxSize = n } }

// WithMaxAliasNodes sets how many nodes alias expansion may add to a document.
func WithMaxAliasNodes(n int) Option { return func(d *Decoder) { d.maxAlias = n } }

// ReadFile reads a config file of at most limit bytes. It stops reading past the limit, so a huge
// file (or /dev/zero) costs nothing; the error names the file and wraps ErrTooLarge.
func ReadFile(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: %w of %s for a config file", name, ErrTooLarge, ByteSize(limit))
	}
	return data, nil
}

// sizeProblem reports a document over the decoder's size limit.
func (d *Decoder) sizeProblem(n int) bool {
	if int64(n) <= d.maxSize {
		return false
	}
	d.problems = append(d.problems, Problem{Msg: fmt.Sprintf("the document is %d bytes, %v of %s", n, ErrTooLarge, ByteSize(d.maxSize))})
	return true
}

// checkAliases measures the document as the decoder will walk it, with every alias replaced by
// what it points to, before anything is decoded. It reports the alias at which the expansion
// passes the budget, or one that refers to a node containing it (yaml.v3 builds that cycle), and
// returns false then. Each node is measured once, so the check is linear in the document.
func (d *Decoder) checkAliases(root *yaml.Node) bool {
	limit := d.maxAlias
	sizes := map[*yaml.Node]int{}   // expanded size of nodes measured so far, capped at limit+1
	open := map[*yaml.Node]bool{}   // nodes being measured: an alias to one of them is a cycle
	var cycle *yaml.Node            // the alias that closed a cycle
	var size func(n *yaml.Node) int // expanded size of n, capped at limit+1
	size = func(n *yaml.Node) int {
		if n.Kind == yaml.AliasNode {
			if n.Alias == nil {
				return 1
			}
			if open[n.Alias] {
				cycle = n
				return limit + 1
			}
			return size(n.Alias)
		}
		if s, ok := sizes[n]; ok {
			return s
		}
		open[n] = true
		s := 1
		for _, c := range n.Content {
			s = min(s+size(c), limit+1)
			if cycle != nil || s > limit {
				break
			}
		}
		delete(open, n)
		sizes[n] = s
		return s
	}

	added := 0 // nodes the aliases met so far add to the document
	var walk func(n *yaml.Node, path string) bool
	walk = func(n *yaml.Node, path string) bool {
		switch n.Kind {
		case yaml.AliasNode:
			added = min(added+size(n), limit+1)
			switch {
			case cycle != nil:
				d.Errorf(cycle, path, "alias *%s refers to itself (its anchor contains it): a recursive value cannot be decoded", cycle.Value)
				return false
			case added > limit:
				d.Errorf(n, path, "alias *%s expands the document by more than %d nodes (aliases nested in aliases?); write the values out or share less", n.Value, limit)
				return false
			}
		case yaml.MappingNode:
			open[n] = true
			defer delete(open, n)
			for i := 0; i+1 < len(n.Content); i += 2 {
				if !walk(n.Content[i], path) || !walk(n.Content[i+1], mapKeyPath(path, n.Content[i].Value)) {
					return false
				}
			}
		case yaml.SequenceNode, yaml.DocumentNode:
			open[n] = true
			defer delete(open, n)
			for i, c := range n.Content {
				if !walk(c, path+Index(i)) {
					return false
				}
			}
		}
		return true
	}
	return walk(root, "")
}
