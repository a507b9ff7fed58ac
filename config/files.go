package config

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// A config may be read from several files merged into one document (the agent's main file and
// its conf.d entries). Lines are per file, so each problem must name its file: problems found
// while parsing a file get it from ParseFile, problems found while decoding the merged document
// get it from the path, through SetFileOf.

// ParseFile is Parse for one of several files: every problem it records (syntax, size, unset
// ${VAR}) names file, with paths relative to that file's document.
func (d *Decoder) ParseFile(file string, data []byte) (*yaml.Node, error) {
	if d.fileOrder == nil {
		d.fileOrder = map[string]int{}
	}
	if _, ok := d.fileOrder[file]; !ok {
		d.fileOrder[file] = len(d.fileOrder)
	}
	before := len(d.problems)
	root, err := d.Parse(data)
	for i := before; i < len(d.problems); i++ {
		d.problems[i].File = file
	}
	if err != nil {
		return nil, d.Err()
	}
	return root, nil
}

// SetFileOf tells the decoder which file a path of the merged document came from, and the path
// within that file ("collectors[7].endpoint" may be "collectors[0].endpoint" of a conf.d file).
// It applies to problems without a file, when Err reports them.
func (d *Decoder) SetFileOf(f func(path string) (file, local string)) { d.fileOf = f }

// FileErrorf records a problem in file at node n, with a path relative to that file.
func (d *Decoder) FileErrorf(file string, n *yaml.Node, path, format string, args ...any) {
	p := Problem{File: file, Path: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		p.Line, p.Column = n.Line, n.Column
	}
	d.problems = append(d.problems, p)
}

// Where returns where field (relative to the report) was written, "FILE:LINE" when the document
// was merged from files, "line N" otherwise, or "" when unknown: for a problem that names a
// second place (a duplicate's first definition).
func (r Report) Where(field string) string {
	path := r.Path(field)
	n := r.d.nearest(path)
	if n == nil || n.Line == 0 {
		return ""
	}
	if r.d.fileOf != nil {
		if file, _ := r.d.fileOf(path); file != "" {
			return fmt.Sprintf("%s:%d", file, n.Line)
		}
	}
	return fmt.Sprintf("line %d", n.Line)
}
