package mqtt

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A template names signals and label values from a message: "line1.{topic.2}.{field}".
// Placeholders are parsed once at config time; expanding one costs a few appends.
type template struct {
	src   string
	parts []tpart
	// cache holds expansions by topic and field for templates that do not read the payload, so
	// the steady state allocates no names. Only the collector's worker goroutine expands.
	cache *nameCache
}

type nameCache struct {
	byTopic map[string]map[string]string
	size    int
}

// maxCachedNames bounds the cache when topics or field names are unbounded (it is then reset).
const maxCachedNames = 100000

type tkind uint8

const (
	tLiteral    tkind = iota
	tTopic            // whole topic, '/' replaced by '.'
	tTopicLevel       // one topic level, 0-based; negative counts from the end
	tField            // the field's name (json) or the metric name (sparkplugb)
	tJSON             // a scalar at a JSON path of the current element
	tGroup            // sparkplug group id
	tNode             // sparkplug edge node id
	tDevice           // sparkplug device id ("" for node metrics)
)

type tpart struct {
	kind  tkind
	lit   string
	level int
	path  jsonPath
}

// tctx is what a template expands from.
type tctx struct {
	topic  string
	levels []string
	field  string
	doc    *jdoc // current JSON document and element for {json.PATH}
	elem   int32
	group  string
	node   string
	device string
}

var formatPlaceholders = map[string]map[tkind]bool{
	FormatJSON:       {tTopic: true, tTopicLevel: true, tField: true, tJSON: true},
	FormatValue:      {tTopic: true, tTopicLevel: true},
	FormatSparkplugB: {tTopic: true, tTopicLevel: true, tField: true, tGroup: true, tNode: true, tDevice: true},
}

func parseTemplate(src, format string) (template, error) {
	t := template{src: src}
	allowed := formatPlaceholders[format]
	rest := src
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if j := strings.IndexByte(rest, '}'); j >= 0 && (i < 0 || j < i) {
			return t, fmt.Errorf("unmatched '}' in %q", src)
		}
		if i < 0 {
			t.parts = append(t.parts, tpart{kind: tLiteral, lit: rest})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, tpart{kind: tLiteral, lit: rest[:i]})
		}
		end := strings.IndexByte(rest[i:], '}')
		if end < 0 {
			return t, fmt.Errorf("unterminated '{' in %q", src)
		}
		name := rest[i+1 : i+end]
		p, err := parsePlaceholder(name)
		if err != nil {
			return t, fmt.Errorf("%v in %q", err, src)
		}
		if !allowed[p.kind] {
			return t, fmt.Errorf("placeholder {%s} is not available for format %s in %q", name, format, src)
		}
		t.parts = append(t.parts, p)
		rest = rest[i+end+1:]
	}
	if !t.uses(tJSON) && !(len(t.parts) == 1 && t.parts[0].kind == tLiteral) {
		t.cache = &nameCache{byTopic: map[string]map[string]string{}}
	}
	return t, nil
}

func parsePlaceholder(name string) (tpart, error) {
	switch name {
	case "topic":
		return tpart{kind: tTopic}, nil
	case "field", "metric":
		return tpart{kind: tField}, nil
	case "group":
		return tpart{kind: tGroup}, nil
	case "node":
		return tpart{kind: tNode}, nil
	case "device":
		return tpart{kind: tDevice}, nil
	}
	if n, ok := strings.CutPrefix(name, "topic."); ok {
		l, err := strconv.Atoi(n)
		if err != nil {
			return tpart{}, fmt.Errorf("{topic.N} needs a level number, got {%s}", name)
		}
		return tpart{kind: tTopicLevel, level: l}, nil
	}
	if p, ok := strings.CutPrefix(name, "json."); ok {
		jp, err := parsePath(p)
		if err != nil {
			return tpart{}, fmt.Errorf("{%s}: %v", name, err)
		}
		return tpart{kind: tJSON, path: jp}, nil
	}
	return tpart{}, fmt.Errorf("unknown placeholder {%s} (use topic, topic.N, field, json.PATH, group, node, device or metric)", name)
}

// uses reports whether the template contains a placeholder of kind k.
func (t template) uses(k tkind) bool {
	for _, p := range t.parts {
		if p.kind == k {
			return true
		}
	}
	return false
}

// expand renders the template. Empty placeholders collapse the dots around them, so
// "{group}.{node}.{device}.{metric}" reads "g.n.m" for a node metric.
func (t template) expand(c *tctx) (string, error) {
	if len(t.parts) == 1 && t.parts[0].kind == tLiteral {
		return t.parts[0].lit, nil
	}
	if t.cache == nil {
		return t.render(c)
	}
	if name, ok := t.cache.byTopic[c.topic][c.field]; ok {
		return name, nil
	}
	name, err := t.render(c)
	if err != nil {
		return "", err
	}
	if t.cache.size >= maxCachedNames {
		clear(t.cache.byTopic)
		t.cache.size = 0
	}
	fields := t.cache.byTopic[c.topic]
	if fields == nil {
		fields = map[string]string{}
		t.cache.byTopic[c.topic] = fields
	}
	fields[c.field] = name
	t.cache.size++
	return name, nil
}

func (t template) render(c *tctx) (string, error) {
	var b strings.Builder
	b.Grow(len(t.src) + 32)
	for _, p := range t.parts {
		switch p.kind {
		case tLiteral:
			b.WriteString(p.lit)
		case tTopic:
			b.WriteString(strings.ReplaceAll(c.topic, "/", "."))
		case tTopicLevel:
			levels := c.topicLevels() // split only for templates that name a level
			i := p.level
			if i < 0 {
				i += len(levels)
			}
			if i < 0 || i >= len(levels) {
				return "", fmt.Errorf("topic %q has no level %d", c.topic, p.level)
			}
			b.WriteString(levels[i])
		case tField:
			b.WriteString(c.field)
		case tGroup:
			b.WriteString(c.group)
		case tNode:
			b.WriteString(c.node)
		case tDevice:
			b.WriteString(c.device)
		case tJSON:
			if c.doc == nil {
				return "", fmt.Errorf("placeholder {json.%s}: no JSON document", p.path)
			}
			n, ok := p.path.lookup(c.doc, c.elem)
			if !ok {
				return "", fmt.Errorf("placeholder {json.%s}: not in payload", p.path)
			}
			s, ok := scalarText(c.doc.scalar(n))
			if !ok {
				return "", fmt.Errorf("placeholder {json.%s}: not a scalar", p.path)
			}
			b.WriteString(s)
		}
	}
	s := b.String()
	if strings.Contains(s, "..") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") {
		s = collapseDots(s)
	}
	if s == "" {
		return "", fmt.Errorf("template %q expands to an empty name", t.src)
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("template %q expands to a name that is not valid UTF-8: %q", t.src, s)
	}
	return s, nil
}

// topicLevels splits the topic on first use.
func (c *tctx) topicLevels() []string {
	if c.levels == nil {
		c.levels = strings.Split(c.topic, "/")
	}
	return c.levels
}

func collapseDots(s string) string {
	parts := strings.Split(s, ".")
	out := parts[:0]
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, ".")
}
