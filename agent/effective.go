package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/config"
)

// Effective renders the effective config (defaults applied) as YAML with the file's own keys and
// readable durations and sizes (30s, 256KiB), secrets redacted and credentials in URLs
// (nats://user:password@host) too, so that it can be diffed against the file and pasted back:
// read again, it gives the same effective config (with "[redacted]" for each secret's value).
func (c *Config) Effective() ([]byte, error) {
	n, err := yamlValue(reflect.ValueOf(c).Elem(), "")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("render effective config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render effective config: %w", err)
	}
	return b.Bytes(), nil
}

var (
	durationType  = reflect.TypeFor[time.Duration]()
	specType      = reflect.TypeFor[collectors.Spec]()
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	yamlMarshaler = reflect.TypeFor[yaml.Marshaler]()
)

// yamlValue renders v as the config decoder reads it back (config.Decoder): struct fields under
// their yaml keys (untagged: the lower-cased field name, as the decoder takes them), inline fields
// merged. A nil result leaves the key out: nil pointers, maps and slices, which the decoder leaves
// nil when the key is absent.
func yamlValue(v reflect.Value, path string) (*yaml.Node, error) {
	if !v.IsValid() {
		return nil, nil
	}
	t := v.Type()
	switch {
	case t == durationType:
		return scalar("!!str", formatDuration(time.Duration(v.Int()))), nil
	case t == specType:
		return yamlSpec(v.Interface().(collectors.Spec), path)
	case t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface && t.Implements(yamlMarshaler):
		// A type with its own YAML form (an OPC UA deadband: "0.2" or {type, value}). Its zero value
		// is what the decoder leaves when the key is absent, while writing it out could read back
		// as something else (a deadband of 0 reads as an absolute one), so it is left out.
		if v.IsZero() {
			return nil, nil
		}
		out, err := v.Interface().(yaml.Marshaler).MarshalYAML()
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", path, err)
		}
		n := &yaml.Node{}
		if err := n.Encode(out); err != nil {
			return nil, fmt.Errorf("render %s: %w", path, err)
		}
		plain(n)
		return n, nil
	case t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface && t.Implements(jsonMarshaler):
		// Types with their own text form (sizes, secrets, instants) render as their JSON does, which
		// is what their UnmarshalConfig reads; a secret shows "[redacted]" or its {file: PATH}.
		js, err := v.Interface().(json.Marshaler).MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", path, err)
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(js, &doc); err != nil || len(doc.Content) != 1 {
			return nil, fmt.Errorf("render %s: %s is not a YAML value", path, js)
		}
		n := doc.Content[0]
		plain(n)
		return n, nil
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil, nil
		}
		return yamlValue(v.Elem(), path)
	case reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		if err := yamlFields(n, v, path); err != nil {
			return nil, err
		}
		return n, nil
	case reflect.Map:
		if v.IsNil() {
			return nil, nil
		}
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		for _, k := range keys {
			kn, err := yamlValue(k, path)
			if err != nil {
				return nil, err
			}
			vn, err := yamlValue(v.MapIndex(k), config.Join(path, fmt.Sprint(k)))
			if err != nil {
				return nil, err
			}
			if kn != nil && vn != nil {
				n.Content = append(n.Content, kn, vn)
			}
		}
		return n, nil
	case reflect.Slice, reflect.Array:
		if t.Kind() == reflect.Slice && v.IsNil() {
			return nil, nil
		}
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if v.Len() == 0 {
			n.Style = yaml.FlowStyle
		}
		for i := 0; i < v.Len(); i++ {
			e, err := yamlValue(v.Index(i), path+config.Index(i))
			if err != nil {
				return nil, err
			}
			if e == nil {
				e = scalar("!!null", "null")
			}
			n.Content = append(n.Content, e)
		}
		return n, nil
	case reflect.String:
		return text(v.String()), nil
	case reflect.Bool:
		return scalar("!!bool", strconv.FormatBool(v.Bool())), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return scalar("!!int", strconv.FormatInt(v.Int(), 10)), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return scalar("!!int", strconv.FormatUint(v.Uint(), 10)), nil
	case reflect.Float32, reflect.Float64:
		f := strconv.FormatFloat(v.Float(), 'g', -1, 64)
		if !strings.ContainsAny(f, ".eIN") {
			f += ".0" // plain 0 would read as an integer and be printed with an explicit !!float tag
		}
		return scalar("!!float", f), nil
	}
	return nil, fmt.Errorf("render %s: no YAML form for %s", path, t)
}

// yamlFields appends the fields of struct v to mapping n, as config's fieldsOf names them.
func yamlFields(n *yaml.Node, v reflect.Value, path string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if opts == "inline" || (f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct) {
			if err := yamlFields(n, v.Field(i), path); err != nil {
				return err
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		vn, err := yamlValue(v.Field(i), config.Join(path, name))
		if err != nil {
			return err
		}
		if vn != nil {
			n.Content = append(n.Content, text(name), vn)
		}
	}
	return nil
}

// yamlSpec renders a collector as it is written: name, type, disabled when set, then the type's
// own keys on the same level.
func yamlSpec(s collectors.Spec, path string) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	n.Content = append(n.Content, text("name"), text(s.Name), text("type"), text(s.Type))
	if s.Disabled {
		n.Content = append(n.Content, text("disabled"), scalar("!!bool", "true"))
	}
	settings, err := yamlValue(reflect.ValueOf(s.Settings), path)
	if err != nil {
		return nil, err
	}
	if settings != nil && settings.Kind == yaml.MappingNode {
		n.Content = append(n.Content, settings.Content...)
	}
	return n, nil
}

func scalar(tag, value string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
}

// text is a string value as the decoder reads it back: credentials in URLs redacted, and "$"
// doubled so that ${...} expansion gives the text back instead of reading a variable.
func text(s string) *yaml.Node {
	return scalar("!!str", strings.ReplaceAll(config.RedactURL(s), "$", "$$"))
}

// plain applies text's rules to every string of a node parsed from JSON, and drops JSON's quoting
// style so the output reads like the rest.
func plain(n *yaml.Node) {
	n.Style = 0
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		*n = *text(n.Value)
	}
	for _, c := range n.Content {
		plain(c)
	}
}

// formatDuration writes d as time.Duration.String does, without its zero tails: 1m, 72h, 1h30m
// rather than 1m0s, 72h0m0s, 1h30m0s. time.ParseDuration reads both.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
