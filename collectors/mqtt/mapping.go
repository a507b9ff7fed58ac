package mqtt

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/signal"
)

// Reasons a payload (or part of it) is counted as bad. They are the "reason" label of
// gemba_mqtt_bad_payloads_total.
const (
	reasonTooLarge     = "too_large"
	reasonInvalidUTF8  = "invalid_utf8"
	reasonInvalidJSON  = "invalid_json"
	reasonMissingField = "missing_field"
	reasonWrongType    = "wrong_type"
	reasonBadTime      = "bad_time"
	reasonBadName      = "bad_name"
	reasonTooMany      = "too_many_fields"
	reasonProtobuf     = "protobuf"
	reasonSpTopic      = "sparkplug_topic"
	reasonUnknownAlias = "unknown_alias"
	reasonInternal     = "internal_error"
	reasonEmpty        = "empty_payload"
	// Sparkplug births that break the specification's contract (see sparkplug.go).
	reasonDuplicateAlias   = "duplicate_alias"
	reasonDatatypeMismatch = "datatype_mismatch"
)

// maxLeaves bounds the samples one JSON message yields when no fields are configured.
const maxLeaves = 10000

// problem is one thing wrong with a payload; the parsable rest is still emitted.
type problem struct{ reason, detail string }

// sub is a compiled subscription.
type sub struct {
	filter    string
	qos       byte
	format    string
	signal    template
	labels    []labelTmpl
	each      *jsonPath
	fields    []cfield
	allLeaves bool
	timePath  *jsonPath
	timeFmt   string
	valType   string
	stall     time.Duration
	doc       jdoc   // reused by parseJSON; a sub is used by one goroutine at a time
	leafBuf   []leaf // reused by parseJSON when no fields are configured
	// labelCache holds rendered labels by topic when no label reads the payload.
	labelCache map[string]signal.Labels
}

type labelTmpl struct {
	key string
	val template
}

type cfield struct {
	path     jsonPath
	name     string
	signal   *template
	typ      string
	optional bool
}

var valueTypes = []string{"", "auto", "float", "int", "bool", "string"}

func defaultSignal(format string) string {
	switch format {
	case FormatJSON:
		return "{topic}.{field}"
	case FormatSparkplugB:
		return "{group}.{node}.{device}.{metric}"
	}
	return "{topic}"
}

// compileSubscription checks a subscription and prepares its templates and paths. Errors are
// *compileError with the field path relative to the subscription.
func compileSubscription(s *Subscription) (*sub, error) {
	c := &sub{filter: s.Topic, format: s.Format, valType: s.Type}
	switch s.Format {
	case FormatJSON, FormatValue, FormatSparkplugB:
	case "":
		return nil, cerr("format", "required: json, value or sparkplugb")
	default:
		return nil, cerr("format", "unknown format %q (use json, value or sparkplugb)", s.Format)
	}
	src := s.Signal
	if src == "" {
		src = defaultSignal(s.Format)
	}
	t, err := parseTemplate(src, s.Format)
	if err != nil {
		return nil, cerr("signal", "%v", err)
	}
	c.signal = t
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		lt, err := parseTemplate(s.Labels[k], s.Format)
		if err != nil {
			return nil, cerr("labels."+k, "%v", err)
		}
		if lt.uses(tField) {
			// Labels are rendered once per message (or each element), before any field or metric.
			name := "field"
			if strings.Contains(s.Labels[k], "{metric}") {
				name = "metric"
			}
			return nil, cerr("labels."+k, "placeholder {%s} is not available in labels (they are the same for every sample of a message)", name)
		}
		c.labels = append(c.labels, labelTmpl{key: k, val: lt})
	}
	if len(c.labels) > 0 {
		c.labelCache = map[string]signal.Labels{}
		for _, l := range c.labels {
			if l.val.uses(tJSON) {
				c.labelCache = nil
			}
		}
	}
	if !slices.Contains(valueTypes, s.Type) {
		return nil, cerr("type", "unknown type %q (use auto, float, int, bool or string)", s.Type)
	}
	if s.Format != FormatJSON {
		switch {
		case len(s.Fields) > 0:
			return nil, cerr("fields", "only for format json")
		case s.Each != "":
			return nil, cerr("each", "only for format json")
		case s.TimeField != "":
			return nil, cerr("time_field", "only for format json")
		case s.Type != "" && s.Format != FormatValue:
			return nil, cerr("type", "only for format value")
		}
		return c, nil
	}
	if s.Type != "" {
		return nil, cerr("type", "only for format value (set type per field for json)")
	}
	if s.Each != "" {
		p, err := parsePath(s.Each)
		if err != nil {
			return nil, cerr("each", "%v", err)
		}
		c.each = &p
	}
	if s.TimeField != "" {
		p, err := parsePath(s.TimeField)
		if err != nil {
			return nil, cerr("time_field", "%v", err)
		}
		c.timePath = &p
	}
	c.timeFmt = s.TimeFormat
	if err := checkTimeFormat(s.TimeFormat); err != nil {
		return nil, cerr("time_format", "%v", err)
	}
	if s.TimeFormat != "" && s.TimeField == "" {
		return nil, cerr("time_format", "needs time_field")
	}
	c.allLeaves = len(s.Fields) == 0
	names := map[string]int{}
	for i, f := range s.Fields {
		fp := "fields" + config.Index(i)
		p, err := parsePath(f.Path)
		if err != nil {
			return nil, cerr(fp+".path", "%v", err)
		}
		if !slices.Contains(valueTypes, f.Type) {
			return nil, cerr(fp+".type", "unknown type %q (use auto, float, int, bool or string)", f.Type)
		}
		cf := cfield{path: p, name: f.Name, typ: f.Type, optional: f.Optional}
		if cf.name == "" {
			cf.name = f.Path
		}
		if f.Signal != "" {
			ft, err := parseTemplate(f.Signal, FormatJSON)
			if err != nil {
				return nil, cerr(fp+".signal", "%v", err)
			}
			cf.signal = &ft
		}
		if j, dup := names[cf.name]; dup && f.Signal == "" {
			return nil, cerr(fp+".name", "name %q is already used by fields[%d]; give each field its own name", cf.name, j)
		}
		names[cf.name] = i
		c.fields = append(c.fields, cf)
	}
	if len(c.fields) > 1 && !c.signal.uses(tField) && !c.signal.uses(tJSON) {
		allOwn := true
		for _, f := range c.fields {
			allOwn = allOwn && f.signal != nil
		}
		if !allOwn {
			return nil, cerr("signal", "%q names every field the same; add {field} or set signal per field", src)
		}
	}
	return c, nil
}

var timeKeywords = []string{"", "auto", "unix_s", "unix_ms", "unix_us", "unix_ns", "rfc3339"}

func checkTimeFormat(f string) error {
	if slices.Contains(timeKeywords, f) {
		return nil
	}
	// A layout renders a time differently from its own text; plain text renders as itself.
	ref := time.Date(2011, 3, 4, 5, 6, 7, 0, time.UTC)
	if ref.Format(f) == f {
		return fmt.Errorf("%q is neither auto, unix_s, unix_ms, unix_us, unix_ns, rfc3339 nor a Go time layout (like 2006-01-02 15:04:05)", f)
	}
	return nil
}

// msgCtx is one message being mapped.
type msgCtx struct {
	source string // "<collector>:<topic>"
	topic  string
	levels []string
	recv   time.Time
	probs  []problem
}

// lv returns the topic levels, split on first use.
func (m *msgCtx) lv() []string {
	if m.levels == nil {
		m.levels = strings.Split(m.topic, "/")
	}
	return m.levels
}

func (m *msgCtx) addProblem(reason, format string, args ...any) {
	m.probs = append(m.probs, problem{reason: reason, detail: fmt.Sprintf(format, args...)})
}

// labelsFor renders the subscription's labels.
func (s *sub) labelsFor(m *msgCtx, c *tctx) signal.Labels {
	if len(s.labels) == 0 {
		return nil
	}
	if s.labelCache != nil {
		if l, ok := s.labelCache[m.topic]; ok {
			return l
		}
	}
	nprobs := len(m.probs)
	out := make(signal.Labels, 0, len(s.labels))
	for _, l := range s.labels {
		v, err := l.val.expand(c)
		if err != nil {
			m.addProblem(reasonBadName, "label %s: %v", l.key, err)
			continue
		}
		out = append(out, signal.Label{Key: l.key, Value: v})
	}
	if s.labelCache != nil && len(m.probs) == nprobs {
		if len(s.labelCache) >= maxCachedNames {
			clear(s.labelCache)
		}
		// Shared by every sample of the topic: nobody modifies a sample's labels in place.
		s.labelCache[m.topic] = out
	}
	return out
}

// parseValue maps a payload that is one number, boolean or string.
func (s *sub) parseValue(dst []signal.Sample, m *msgCtx, payload []byte) []signal.Sample {
	if !utf8.Valid(payload) {
		m.addProblem(reasonInvalidUTF8, "payload is not valid UTF-8")
		return dst
	}
	c := tctx{topic: m.topic, levels: m.levels}
	name, err := s.signal.expand(&c)
	if err != nil {
		m.addProblem(reasonBadName, "%v", err)
		return dst
	}
	text := strings.TrimSpace(string(payload))
	if text == "" {
		m.addProblem(reasonEmpty, "empty payload")
		return dst
	}
	v, err := convertText(text, s.valType)
	if err != nil {
		m.addProblem(reasonWrongType, "%v", err)
		return dst
	}
	return append(dst, signal.Sample{Signal: name, Time: m.recv, Value: v, Source: m.source, Labels: s.labelsFor(m, &c)})
}

// convertText reads a value payload: numbers become int or float, true/false bool, the rest string.
func convertText(text, typ string) (signal.Value, error) {
	switch typ {
	case "", "auto":
		if text == "true" || text == "false" {
			return signal.Bool(text == "true"), nil
		}
		if v, ok := parseNumber(text); ok {
			return v, nil
		}
		return signal.String(text), nil
	case "string":
		return signal.String(text), nil
	case "bool":
		// As a JSON string is read for type bool: true, FALSE, t, 0, ...; else a number 0 or 1.
		if b, err := strconv.ParseBool(text); err == nil {
			return signal.Bool(b), nil
		}
	}
	if text == "true" || text == "false" {
		return convert(text == "true", typ) // int and float read a boolean as 1 or 0, as in JSON
	}
	return convert(json.Number(text), typ)
}

func parseNumber(s string) (signal.Value, bool) {
	if s == "" || len(s) > 64 {
		return signal.Value{}, false
	}
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return signal.Int(i), true
		}
	}
	// ParseFloat accepts "inf" and "nan" and hex; a reading must be a plain finite decimal.
	if c := s[len(s)-1]; c < '0' || c > '9' {
		if c != '.' {
			return signal.Value{}, false
		}
	}
	if strings.ContainsAny(s, "xXpPnNiI_") {
		return signal.Value{}, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return signal.Value{}, false
	}
	return signal.Float(f), true
}

// convert turns a JSON scalar into a typed value; typ "" or auto keeps the JSON type.
func convert(v any, typ string) (signal.Value, error) {
	switch x := v.(type) {
	case json.Number:
		num, ok := parseNumber(string(x))
		if !ok {
			return signal.Value{}, fmt.Errorf("%q is not a number", string(x))
		}
		switch typ {
		case "", "auto":
			return num, nil
		case "float":
			f, _ := num.Number()
			return signal.Float(f), nil
		case "int":
			if i, ok := num.Int(); ok {
				return signal.Int(i), nil
			}
			f, _ := num.Float()
			if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
				return signal.Value{}, fmt.Errorf("%s is not an integer", x)
			}
			return signal.Int(int64(f)), nil
		case "bool":
			f, _ := num.Number()
			if f != 0 && f != 1 {
				return signal.Value{}, fmt.Errorf("%s is not a boolean (0 or 1)", x)
			}
			return signal.Bool(f == 1), nil
		case "string":
			return signal.String(string(x)), nil
		}
	case bool:
		switch typ {
		case "", "auto", "bool":
			return signal.Bool(x), nil
		case "float":
			return signal.Float(b2f(x)), nil
		case "int":
			return signal.Int(int64(b2f(x))), nil
		case "string":
			return signal.String(strconv.FormatBool(x)), nil
		}
	case string:
		switch typ {
		case "", "auto", "string":
			return signal.String(x), nil
		case "bool":
			b, err := strconv.ParseBool(strings.TrimSpace(x))
			if err != nil {
				return signal.Value{}, fmt.Errorf("%q is not a boolean", x)
			}
			return signal.Bool(b), nil
		default:
			return convert(json.Number(strings.TrimSpace(x)), typ)
		}
	case nil:
		return signal.Value{}, nil
	}
	return signal.Value{}, fmt.Errorf("expected a %s value, got %s", typeName(typ), jsonKind(v))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func typeName(t string) string {
	if t == "" || t == "auto" {
		return "scalar"
	}
	return t
}

func jsonKind(v any) string {
	switch v.(type) {
	case jsonObject:
		return "an object"
	case jsonArray:
		return "an array"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
