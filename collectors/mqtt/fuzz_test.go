package mqtt

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gemba-io/gemba/signal"
)

// Every parser must return (samples, problems) for any input, never panic, and never emit a
// sample without a name or with invalid UTF-8 in it.

func checkSamples(t *testing.T, ss []signal.Sample) {
	t.Helper()
	for _, s := range ss {
		if s.Signal == "" || !utf8.ValidString(s.Signal) {
			t.Fatalf("bad signal name %q", s.Signal)
		}
		if str, ok := s.Value.Str(); ok && !utf8.ValidString(str) {
			t.Fatalf("invalid UTF-8 string value %q", str)
		}
		if s.Quality == signal.Good && s.Value.Kind() == signal.KindNone {
			t.Fatalf("good sample without a value: %+v", s)
		}
	}
}

func FuzzJSONPayload(f *testing.F) {
	f.Add([]byte(`{"ts":1700000000123,"temp":21.5,"axes":[{"load":1},{"load":7}],"state":{"running":true}}`))
	f.Add([]byte(`{"a":{"b":[1,2,{"c":null}]}}`))
	f.Add([]byte(`{"a":1`))
	f.Add([]byte(`[1,2,3]`))
	f.Add([]byte("\xff"))
	subs := []Subscription{
		{Format: FormatJSON},
		{Format: FormatJSON, Signal: "{topic.1}.{field}", Fields: []Field{{Path: "temp", Type: "float"}, {Path: "axes[1].load", Type: "int"}, {Path: "state.running", Type: "bool"}}, TimeField: "ts"},
		{Format: FormatJSON, Each: "readings", Signal: "x.{json.id}", Fields: []Field{{Path: "v"}}, TimeField: "$.ts", TimeFormat: "rfc3339"},
	}
	compiled := make([]*sub, len(subs))
	for i := range subs {
		c, err := compileSubscription(&subs[i])
		if err != nil {
			f.Fatal(err)
		}
		compiled[i] = c
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		for _, c := range compiled {
			m := msgCtx{topic: "a/b", levels: []string{"a", "b"}, recv: time.Unix(0, 0)}
			checkSamples(t, c.parseJSON(nil, &m, payload))
		}
	})
}

func FuzzValuePayload(f *testing.F) {
	for _, s := range []string{"42", "-1.5e3", "true", "RUNNING", "", "\xfe", "0x10", "inf", "1_000"} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte("1"), "bool")
	f.Add([]byte("3.7"), "int")
	f.Fuzz(func(t *testing.T, payload []byte, typ string) {
		s := Subscription{Format: FormatValue, Type: typ}
		c, err := compileSubscription(&s)
		if err != nil {
			return
		}
		m := msgCtx{topic: "a/b", levels: []string{"a", "b"}, recv: time.Unix(0, 0)}
		checkSamples(t, c.parseValue(nil, &m, payload))
	})
}

func FuzzSparkplugPayload(f *testing.F) {
	e := &edgeNode{group: "g", node: "n", now: 1}
	f.Add("spBv1.0/g/NBIRTH/n", e.payload([]metricSpec{{name: "bdSeq", dt: 4, value: uint64(0)}, {name: "T", alias: 1, dt: 10, value: 1.5}}, true))
	f.Add("spBv1.0/g/NDATA/n", e.payload([]metricSpec{{alias: 1, noName: true, value: 2.5}}, true))
	f.Add("spBv1.0/g/DBIRTH/n/d", e.payload([]metricSpec{{name: "S", alias: 2, dt: 12, value: "x"}}, true))
	f.Add("spBv1.0/g/NDEATH/n", e.payload([]metricSpec{{name: "bdSeq", dt: 4, value: uint64(0)}}, false))
	f.Add("spBv1.0/g/NDATA/n", []byte{0x0a, 0xff})
	f.Add("spBv1.0/STATE/host", []byte("ONLINE"))
	s := Subscription{Format: FormatSparkplugB}
	c, err := compileSubscription(&s)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		// One host per input, fed the input twice so state carried between messages is exercised.
		h := newSpHost()
		for range 2 {
			m := msgCtx{topic: topic, levels: strings.Split(topic, "/"), recv: time.Unix(0, 0)}
			checkSamples(t, c.parseSparkplug(nil, &m, payload, h, true, time.Second))
		}
	})
}

func FuzzPathAndTemplate(f *testing.F) {
	f.Add("a.b[2].c", "line1.{topic.2}.{field}", `{"a":{"b":[0,1,{"c":"x"}]}}`)
	f.Add(`a["k.x"]`, "{json.id}", `{"id":"t"}`)
	f.Add("$.ts", "{topic.-1}", `{"ts":1}`)
	f.Add("[0]", "{", `[1]`)
	f.Fuzz(func(t *testing.T, path, tmpl, doc string) {
		var d jdoc
		docOK := d.parse([]byte(doc)) == nil
		p, err := parsePath(path)
		if err == nil && docOK {
			if n, ok := p.lookup(&d, 0); ok && (n < 0 || int(n) >= len(d.nodes)) {
				t.Fatalf("lookup returned node %d of %d", n, len(d.nodes))
			}
		}
		tp, err := parseTemplate(tmpl, FormatJSON)
		if err != nil {
			return
		}
		c := tctx{topic: "a/b/c", levels: []string{"a", "b", "c"}, field: "f"}
		if docOK {
			c.doc = &d
		}
		name, err := tp.expand(&c)
		if err == nil && name == "" {
			t.Fatalf("template %q expanded to an empty name without an error", tmpl)
		}
	})
}

// FuzzJSONDoc checks the JSON parser against encoding/json: the same documents are valid, and
// strings decode to the same text.
func FuzzJSONDoc(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e-3,-0,true,false,null,"x\u00e9\ud83d\ude00"]}`, `"\ud800"`, `[]`, `{}`, `01`, `1.`, `-`, `{"a":1,}`, `"\x"`, " 1 ", `{"a" 1}`, `[1 2]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d jdoc
		err := d.parse(data)
		if want := json.Valid(data); (err == nil) != want {
			t.Fatalf("parse(%q) error = %v, encoding/json valid = %v", data, err, want)
		}
		if err != nil {
			return
		}
		if d.nodes[0].kind == jStr {
			var ref string
			if json.Unmarshal(data, &ref) == nil && utf8.Valid(data) && ref != d.scalar(0) {
				t.Fatalf("string %q decoded to %q, encoding/json gives %q", data, d.scalar(0), ref)
			}
		}
	})
}

func FuzzTime(f *testing.F) {
	f.Add("1700000000", "")
	f.Add("1700000000.25", "unix_s")
	f.Add("2024-05-06T07:08:09Z", "rfc3339")
	f.Add("2024-05-06 07:08:09", "2006-01-02 15:04:05")
	f.Add("-9223372036854775808", "unix_ns")
	f.Fuzz(func(t *testing.T, v, format string) {
		if checkTimeFormat(format) != nil {
			return
		}
		_, _ = parseTime(v, format)
		if n, ok := parseNumber(v); ok {
			_, _ = parseTime(anyNumber(n), format)
		}
	})
}

func anyNumber(v signal.Value) any { return json.Number(v.Text()) }
