package doccheck

import (
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Reference is what a configuration reference (docs/configuration.md, docs/hub-configuration.md)
// says about the keys of a config.
type Reference struct {
	// Documented holds every key path the reference names: in a table's key column, as "`key`
	// (default)" in prose, or as a key of a yaml example.
	Documented map[string]bool
	// Unknown is a message per name ("LINE: ...") the reference gives as a key that the config does not have.
	Unknown []string
	// Defaults are the defaults the reference states, one per key.
	Defaults []Default
}

// Default is one key's default as a reference writes it.
type Default struct {
	Path string
	Text string // the value, without code quotes: "30s", "[web, retail, wholesale]", "host name"
	Line int
}

// Covers reports whether the reference documents path: it names it, or names a map it is inside
// (`channels.<name>` documents every key of a channel), or names a key that is a value of its own.
func (r Reference) Covers(path string) bool {
	if r.Documented[path] {
		return true
	}
	for p := path; ; {
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			return false
		}
		p = p[:i]
		if strings.HasSuffix(p, "*") && r.Documented[p] {
			return true
		}
	}
}

var (
	heading      = regexp.MustCompile(`^(#+)\s+(.*)$`)
	codeSpan     = regexp.MustCompile("`([^`]*)`")
	proseKey     = regexp.MustCompile("`([a-z_][a-z0-9_.]*)` \\(((?:[^()]|\\([^()]*\\))*)\\)")
	keyLike      = regexp.MustCompile(`^[a-z_][a-z0-9_]*(\.([a-z_][a-z0-9_]*|\*))*$`)
	angle        = regexp.MustCompile(`<[^>]*>`)
	braceList    = regexp.MustCompile(`\{([^{}]*)\}`)
	proseSetting = regexp.MustCompile("`([a-z_][a-z0-9_.]*): [^`]*`")
	word         = regexp.MustCompile(`[a-z_][a-z0-9_]*`)
)

type section struct {
	level  int
	prefix string
}

// ReadReference reads a configuration reference against the keys of its config. Sections are
// named by the first code span of their heading when it is a top-level key (## `uplink`); a
// heading that names none (### Hot reload, ### `type: opcua`) stays in its parent's section. Key
// columns are read relative to the section; in a row naming several keys a bare name after a
// dotted one is its sibling (`nats.tls.ca_file`, `cert_file`).
func ReadReference(md string, keys Keys) Reference {
	ref := Reference{Documented: map[string]bool{}}
	lines := strings.Split(md, "\n")
	tabled := sectionsWithTables(lines)
	var stack []section
	prefix := func() string {
		if len(stack) == 0 {
			return ""
		}
		return stack[len(stack)-1].prefix
	}
	sectionStart := 0
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if fence, ok := strings.CutPrefix(strings.TrimSpace(line), "```"); ok {
			start := i
			var block []string
			for i++; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "```"); i++ {
				block = append(block, lines[i])
			}
			if strings.TrimSpace(fence) == "yaml" {
				ref.readYAML(strings.Join(block, "\n"), start+1, prefix(), keys)
			}
			continue
		}
		if m := heading.FindStringSubmatch(line); m != nil {
			level := len(m[1])
			for len(stack) > 0 && stack[len(stack)-1].level >= level {
				stack = stack[:len(stack)-1]
			}
			p := prefix()
			if c := codeSpan.FindStringSubmatch(m[2]); c != nil {
				if _, ok := keys[c[1]]; ok && !strings.Contains(c[1], ".") {
					p = c[1]
				}
			}
			stack = append(stack, section{level, p})
			sectionStart = i
			continue
		}
		if strings.HasPrefix(line, "|") {
			i = ref.readTable(lines, i, prefix(), keys) - 1
			continue
		}
		if tabled[sectionStart] || strings.TrimSpace(line) == "" {
			continue
		}
		// A paragraph: "`max_age`\n(30 days)" is one key and its default.
		start := i
		for i+1 < len(lines) && strings.TrimSpace(lines[i+1]) != "" && !heading.MatchString(lines[i+1]) &&
			!strings.HasPrefix(lines[i+1], "|") && !strings.HasPrefix(strings.TrimSpace(lines[i+1]), "```") {
			i++
			line += " " + strings.TrimSpace(lines[i])
		}
		for _, m := range proseSetting.FindAllStringSubmatch(line, -1) {
			if path, ok := resolve(keys, prefix(), "", m[1]); ok {
				ref.Documented[path] = true // `disabled: true`
			}
		}
		for _, m := range proseKey.FindAllStringSubmatch(line, -1) {
			path, ok := resolve(keys, prefix(), "", normalize(m[1])[0])
			if !ok {
				continue // prose names keys of other sections too; only tables and yaml are strict
			}
			ref.Documented[path] = true
			if v, ok := defaultText(proseDefault(m[2])); ok {
				ref.Defaults = append(ref.Defaults, Default{Path: path, Text: v, Line: start + 1})
			}
		}
	}
	return ref
}

// sectionsWithTables marks the heading lines whose section (up to the next heading) has a table
// with a key column; prose defaults are read only in sections without one.
func sectionsWithTables(lines []string) map[int]bool {
	out := map[int]bool{}
	start, fenced := 0, false
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		if heading.MatchString(l) {
			start = i
		}
		if cells := splitRow(l); len(cells) > 0 && cells[0] == "key" {
			out[start] = true
		}
	}
	return out
}

// readTable reads a table starting at lines[i] and returns the index of the line after it.
func (ref *Reference) readTable(lines []string, i int, prefix string, keys Keys) int {
	header := splitRow(lines[i])
	j := i + 1
	for j < len(lines) && strings.HasPrefix(lines[j], "|") {
		j++
	}
	if len(header) == 0 || header[0] != "key" {
		return j
	}
	def := -1
	for c, h := range header {
		if h == "default" {
			def = c
		}
	}
	for r := i + 2; r < j; r++ {
		cells := splitRow(lines[r])
		if len(cells) == 0 {
			continue
		}
		var tokens []string
		if spans := codeSpan.FindAllStringSubmatch(cells[0], -1); spans != nil {
			for _, s := range spans {
				tokens = append(tokens, normalize(s[1])...)
			}
		} else {
			tokens = normalize(cells[0])
		}
		var paths []string
		prev := ""
		for _, t := range tokens {
			path, ok := resolve(keys, prefix, prev, t)
			if !ok {
				ref.Unknown = append(ref.Unknown, fmt.Sprintf("%d: `%s` (in section %q) is not a key of the config", r+1, t, prefix))
				paths = append(paths, "")
				continue
			}
			ref.Documented[path] = true
			paths = append(paths, path)
			prev = path
		}
		if def < 0 || def >= len(cells) {
			continue
		}
		parts := splitTop(cells[def])
		if len(parts) != len(paths) {
			continue // one default for several keys, or prose: nothing to compare
		}
		for k, p := range paths {
			if v, ok := defaultText(parts[k]); ok && p != "" {
				ref.Defaults = append(ref.Defaults, Default{Path: p, Text: v, Line: r + 1})
			}
		}
	}
	return j
}

// readYAML marks the keys of a yaml example; a key the config does not have is Unknown. Maps whose
// keys are data (labels, rename) are not looked into.
func (ref *Reference) readYAML(text string, line int, prefix string, keys Keys) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		ref.Unknown = append(ref.Unknown, fmt.Sprintf("%d: yaml example does not parse: %v", line, err))
		return
	}
	if len(doc.Content) == 0 {
		return
	}
	n := doc.Content[0]
	if n.Kind == yaml.MappingNode && len(n.Content) == 2 && n.Content[0].Value == prefix {
		n = n.Content[1]
	}
	var walk func(path string, n *yaml.Node)
	walk = func(path string, n *yaml.Node) {
		switch n.Kind {
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(path, c)
			}
		case yaml.MappingNode:
			if node, ok := keys[path]; ok && node.Leaf {
				return
			}
			ref.comments(keys, n, path)
			for k := 0; k+1 < len(n.Content); k += 2 {
				name := n.Content[k].Value
				p := join(path, name)
				ref.comments(keys, n.Content[k], path, p)
				ref.comments(keys, n.Content[k+1], path, p)
				if _, ok := keys[p]; !ok {
					if _, ok := keys[join(path, "*")]; !ok {
						ref.Unknown = append(ref.Unknown, fmt.Sprintf("%d: `%s` in a yaml example is not a key of the config", line+n.Content[k].Line, p))
						continue
					}
					p = join(path, "*")
				}
				ref.Documented[p] = true
				walk(p, n.Content[k+1])
			}
		}
	}
	walk(prefix, n)
}

// comments marks the keys a yaml example names in its comments ("# or brokers: [a, b]", "# a
// group accepts trigger, max_array"): the words that are keys at one of paths. A comment's other
// words are prose, so nothing in it is Unknown.
func (ref *Reference) comments(keys Keys, n *yaml.Node, paths ...string) {
	for _, c := range []string{n.HeadComment, n.LineComment, n.FootComment} {
		// A commented-out setting, "# tls: {ca_file: ..., key_file: ...}", or several lines of one
		// ("# users:", "#   - {name: ops, role: admin}"): the block as a whole, then each line.
		lines := strings.Split(c, "\n")
		for i, l := range lines {
			l = strings.TrimPrefix(strings.TrimSpace(l), "#")
			lines[i] = strings.TrimPrefix(l, " ")
		}
		for _, text := range append([]string{strings.Join(lines, "\n")}, lines...) {
			var doc yaml.Node
			if yaml.Unmarshal([]byte(text), &doc) != nil || len(doc.Content) == 0 {
				continue
			}
			for _, p := range paths {
				ref.commentKeys(keys, p, doc.Content[0])
			}
		}
		for _, w := range word.FindAllString(c, -1) {
			for _, p := range paths {
				if _, ok := keys[join(p, w)]; ok {
					ref.Documented[join(p, w)] = true
				}
			}
		}
	}
}

// ExampleKeys reads a config file (configs/*.example.yaml) as a yaml example of the whole config:
// the keys it sets or names in comments, and a message per key the config does not have.
func ExampleKeys(text string, keys Keys) (map[string]bool, []string) {
	ref := Reference{Documented: map[string]bool{}}
	ref.readYAML(text, 1, "", keys)
	return ref.Documented, ref.Unknown
}

// commentKeys marks the keys of a commented-out setting that exist at path.
func (ref *Reference) commentKeys(keys Keys, path string, n *yaml.Node) {
	switch n.Kind {
	case yaml.SequenceNode:
		for _, c := range n.Content {
			ref.commentKeys(keys, path, c)
		}
	case yaml.MappingNode:
		for k := 0; k+1 < len(n.Content); k += 2 {
			p := join(path, n.Content[k].Value)
			if _, ok := keys[p]; !ok {
				p = join(path, "*") // a map's entry: temperature: {psi: 0.2}
			}
			if _, ok := keys[p]; ok {
				ref.Documented[p] = true
				ref.commentKeys(keys, p, n.Content[k+1])
			}
		}
	}
}

// resolve finds the key a token names in a section: the sibling of the row's previous key when the
// token is a bare name, else the token within the section, else the token from the root.
func resolve(keys Keys, prefix, prev, t string) (string, bool) {
	var cands []string
	if i := strings.LastIndexByte(prev, '.'); i >= 0 && !strings.Contains(t, ".") && prev[:i] != prefix {
		cands = append(cands, prev[:i]+"."+t)
	}
	cands = append(cands, join(prefix, t), t)
	for _, c := range cands {
		if _, ok := keys[c]; ok {
			return c, true
		}
	}
	return "", false
}

// normalize turns a key as written into key paths: `users[].name` is users.name, `channels.<name>`
// channels.*, `tls.{ca,cert}_file` two keys.
func normalize(s string) []string {
	s = strings.TrimSpace(strings.ReplaceAll(s, "[]", ""))
	s = angle.ReplaceAllString(s, "*")
	m := braceList.FindStringSubmatchIndex(s)
	if m == nil {
		return []string{s}
	}
	var out []string
	for _, alt := range strings.Split(s[m[2]:m[3]], ",") {
		out = append(out, normalize(s[:m[0]]+strings.TrimSpace(alt)+s[m[1]:])...)
	}
	return out
}

// splitRow splits a table row into its cells; a | inside a code span does not split.
func splitRow(l string) []string {
	l = strings.TrimSpace(l)
	if !strings.HasPrefix(l, "|") {
		return nil
	}
	var cells []string
	var cur strings.Builder
	code := false
	for _, r := range l[1:] {
		switch {
		case r == '`':
			code = !code
		case r == '|' && !code:
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	return cells
}

// splitTop splits a cell at the commas outside code spans, brackets and parentheses.
func splitTop(s string) []string {
	var out []string
	depth, code, start := 0, false, 0
	for i, r := range s {
		switch {
		case r == '`':
			code = !code
		case code:
		case r == '(' || r == '[' || r == '{':
			depth++
		case r == ')' || r == ']' || r == '}':
			depth--
		case r == ',' && depth == 0:
			out = append(out, strings.TrimSpace(s[start:i]))
			start = i + 1
		}
	}
	return append(out, strings.TrimSpace(s[start:]))
}

// defaultText is the value a default cell gives: its leading code span, or its text up to a
// parenthesis; nothing for "—" or "unset".
func defaultText(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || strings.HasPrefix(s, "—") || strings.HasPrefix(s, "unset") {
		return "", false
	}
	if strings.HasPrefix(s, "`") {
		if m := codeSpan.FindStringSubmatch(s); m != nil {
			return m[1], true
		}
	}
	if i := strings.Index(s, " ("); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s), true
}

// proseDefault is the value in "`key` (value; remarks)" or "(0: `other.key`)".
func proseDefault(s string) string {
	s, _, _ = strings.Cut(s, ";")
	if !strings.HasPrefix(s, "`") {
		s, _, _ = strings.Cut(s, ":")
	}
	return s
}

// IsKeyRef reports whether a default names another key (`hub.id`, `nats.replicas`) rather than a value.
func IsKeyRef(s string) bool { return keyLike.MatchString(s) && strings.Contains(s, ".") }
