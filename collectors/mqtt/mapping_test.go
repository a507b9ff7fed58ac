package mqtt

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

var recvTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// mapOne maps one payload through a subscription, as the worker does.
func mapOne(t testing.TB, s Subscription, topic string, payload []byte) ([]signal.Sample, []problem) {
	t.Helper()
	c, err := compileSubscription(&s)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	m := msgCtx{source: "t:" + topic, topic: topic, levels: strings.Split(topic, "/"), recv: recvTime}
	var out []signal.Sample
	switch s.Format {
	case FormatJSON:
		out = c.parseJSON(nil, &m, payload)
	case FormatValue:
		out = c.parseValue(nil, &m, payload)
	case FormatSparkplugB:
		out = c.parseSparkplug(nil, &m, payload, newSpHost(), false, 0)
	}
	return out, m.probs
}

// render gives a compact, comparable form of samples.
func render(ss []signal.Sample) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, "%s=%s/%s", s.Signal, s.Value.Kind(), s.Value.Text())
		if !s.Time.Equal(recvTime) {
			fmt.Fprintf(&b, "@%s", s.Time.UTC().Format(time.RFC3339Nano))
		}
		if s.Quality != signal.Good {
			fmt.Fprintf(&b, "!%s(%s)", s.Quality, s.Reason)
		}
		for _, l := range s.Labels {
			fmt.Fprintf(&b, "{%s=%s}", l.Key, l.Value)
		}
		b.WriteString(" ")
	}
	return strings.TrimSpace(b.String())
}

func reasons(ps []problem) string {
	var r []string
	for _, p := range ps {
		r = append(r, p.reason)
	}
	return strings.Join(r, ",")
}

func TestJSONMapping(t *testing.T) {
	cases := []struct {
		name    string
		sub     Subscription
		topic   string
		payload string
		want    string
		probs   string
	}{
		{
			name:    "all leaves by default in document order, nested and arrays",
			sub:     Subscription{Format: FormatJSON},
			topic:   "p/m1",
			payload: `{"b":{"c":2,"d":[true,"x"]},"a":1.5}`,
			want:    "p.m1.b.c=int/2 p.m1.b.d[0]=bool/true p.m1.b.d[1]=string/x p.m1.a=float/1.5",
		},
		{
			name:    "fields with names, types and a per-field signal",
			sub:     Subscription{Format: FormatJSON, Signal: "line1.{topic.-1}.{field}", Fields: []Field{{Path: "t", Name: "temp", Type: "float"}, {Path: "on", Type: "int"}, {Path: `m["a.b"]`, Signal: "line1.special"}}},
			topic:   "x/press",
			payload: `{"t":21,"on":true,"m":{"a.b":"s"}}`,
			want:    "line1.press.temp=float/21 line1.press.on=int/1 line1.special=string/s",
		},
		{
			name:    "time field auto detects milliseconds and is not a sample",
			sub:     Subscription{Format: FormatJSON, TimeField: "ts"},
			topic:   "a",
			payload: `{"ts":1700000000000,"v":1}`,
			want:    "a.v=int/1@2023-11-14T22:13:20Z",
		},
		{
			name:    "time rfc3339 string",
			sub:     Subscription{Format: FormatJSON, TimeField: "ts", TimeFormat: "rfc3339"},
			topic:   "a",
			payload: `{"ts":"2024-05-06T07:08:09.5Z","v":1}`,
			want:    "a.v=int/1@2024-05-06T07:08:09.5Z",
		},
		{
			name:    "time Go layout",
			sub:     Subscription{Format: FormatJSON, TimeField: "ts", TimeFormat: "2006-01-02 15:04:05"},
			topic:   "a",
			payload: `{"ts":"2024-05-06 07:08:09","v":1}`,
			want:    "a.v=int/1@2024-05-06T07:08:09Z",
		},
		{
			name:    "unix_s with fraction",
			sub:     Subscription{Format: FormatJSON, TimeField: "ts", TimeFormat: "unix_s"},
			topic:   "a",
			payload: `{"ts":1700000000.25,"v":1}`,
			want:    "a.v=int/1@2023-11-14T22:13:20.25Z",
		},
		{
			name:    "unix_ns",
			sub:     Subscription{Format: FormatJSON, TimeField: "ts", TimeFormat: "unix_ns"},
			topic:   "a",
			payload: `{"ts":1700000000000000001,"v":1}`,
			want:    "a.v=int/1@2023-11-14T22:13:20.000000001Z",
		},
		{
			name:    "bad time keeps the reading as uncertain at receive time",
			sub:     Subscription{Format: FormatJSON, TimeField: "ts", TimeFormat: "rfc3339", Fields: []Field{{Path: "v"}}},
			topic:   "a",
			payload: `{"ts":"yesterday","v":1}`,
			want:    `a.v=int/1!uncertain(bad time field: "yesterday" is not an RFC 3339 time)`,
			probs:   "bad_time",
		},
		{
			name:    "each maps array elements with json placeholders and root time",
			sub:     Subscription{Format: FormatJSON, Each: "readings", Signal: "{topic.0}.{json.id}", Fields: []Field{{Path: "v", Name: "value"}}, TimeField: "$.ts", Labels: map[string]string{"unit": "{json.unit}"}},
			topic:   "cell4",
			payload: `{"ts":1700000000,"readings":[{"id":"temp","v":20.5,"unit":"C"},{"id":"rpm","v":1200,"unit":"1/min"}]}`,
			want:    "cell4.temp=float/20.5@2023-11-14T22:13:20Z{unit=C} cell4.rpm=int/1200@2023-11-14T22:13:20Z{unit=1/min}",
		},
		{
			name:    "root array",
			sub:     Subscription{Format: FormatJSON, Each: ".", Signal: "s.{json.n}", Fields: []Field{{Path: "v"}}},
			topic:   "t",
			payload: `[{"n":"a","v":1},{"n":"b","v":2}]`,
			want:    "s.a=int/1 s.b=int/2",
		},
		{
			name:    "missing and optional fields",
			sub:     Subscription{Format: FormatJSON, Fields: []Field{{Path: "a"}, {Path: "b"}, {Path: "c", Optional: true}}},
			topic:   "t",
			payload: `{"a":1}`,
			want:    "t.a=int/1",
			probs:   "missing_field",
		},
		{
			name:    "wrong type is a bad sample, the rest is kept",
			sub:     Subscription{Format: FormatJSON, Fields: []Field{{Path: "a"}, {Path: "b", Type: "float"}}},
			topic:   "t",
			payload: `{"a":{"x":1},"b":"2.5"}`,
			want:    "t.a=none/!bad(a: expected a scalar value, got an object) t.b=float/2.5",
			probs:   "wrong_type",
		},
		{
			name:    "null is a bad sample without a problem",
			sub:     Subscription{Format: FormatJSON, Fields: []Field{{Path: "a"}}},
			topic:   "t",
			payload: `{"a":null}`,
			want:    "t.a=none/!bad(null value)",
		},
		{
			name:    "big integers stay exact, huge ones become floats",
			sub:     Subscription{Format: FormatJSON},
			topic:   "t",
			payload: `{"a":9007199254740993,"b":1e400,"c":99999999999999999999}`,
			want:    "t.a=int/9007199254740993 t.b=none/!bad(b: \"1e400\" is not a number) t.c=float/1e+20",
			probs:   "wrong_type",
		},
		{
			name:    "topic level out of range",
			sub:     Subscription{Format: FormatJSON, Signal: "{topic.5}.{field}"},
			topic:   "a/b",
			payload: `{"x":1}`,
			probs:   "bad_name",
		},
		{name: "truncated", sub: Subscription{Format: FormatJSON}, topic: "t", payload: `{"a":1`, probs: "invalid_json"},
		{name: "trailing garbage", sub: Subscription{Format: FormatJSON}, topic: "t", payload: `{"a":1}}`, probs: "invalid_json"},
		{name: "invalid utf8", sub: Subscription{Format: FormatJSON}, topic: "t", payload: "{\"a\":\"\xff\"}", probs: "invalid_utf8"},
		{name: "empty", sub: Subscription{Format: FormatJSON}, topic: "t", payload: ``, probs: "invalid_json"},
		{name: "scalar root", sub: Subscription{Format: FormatJSON}, topic: "t", payload: `5`, want: "t.value=int/5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, probs := mapOne(t, tc.sub, tc.topic, []byte(tc.payload))
			if r := render(got); r != tc.want {
				t.Errorf("samples\n got: %s\nwant: %s", r, tc.want)
			}
			if r := reasons(probs); r != tc.probs {
				t.Errorf("problems = %q (%v), want %q", r, probs, tc.probs)
			}
		})
	}
}

func TestValueMapping(t *testing.T) {
	cases := []struct {
		payload, typ, want, probs string
	}{
		{"42", "", "m.t=int/42", ""},
		{" 21.5\n", "", "m.t=float/21.5", ""},
		{"true", "", "m.t=bool/true", ""},
		{"RUNNING", "", "m.t=string/RUNNING", ""},
		{"1", "bool", "m.t=bool/true", ""},
		// true/false are the payload a value topic most often carries: type bool must take them,
		// and int/float read them as 1/0 like a JSON boolean.
		{"true", "bool", "m.t=bool/true", ""},
		{"false\n", "bool", "m.t=bool/false", ""},
		{"FALSE", "bool", "m.t=bool/false", ""},
		{"true", "int", "m.t=int/1", ""},
		{"false", "float", "m.t=float/0", ""},
		{"2", "bool", "", "wrong_type"},
		{"7", "float", "m.t=float/7", ""},
		{"NaN", "", "m.t=string/NaN", ""},
		{"abc", "float", "", "wrong_type"},
		{"\xff\xfe", "", "", "invalid_utf8"},
	}
	for _, tc := range cases {
		got, probs := mapOne(t, Subscription{Format: FormatValue, Type: tc.typ}, "m/t", []byte(tc.payload))
		if r := render(got); r != tc.want {
			t.Errorf("%q as %q: got %s, want %s", tc.payload, tc.typ, r, tc.want)
		}
		if r := reasons(probs); r != tc.probs {
			t.Errorf("%q as %q: problems %q, want %q", tc.payload, tc.typ, r, tc.probs)
		}
	}
}

func TestTopicMatch(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false}, {"a/#", "a", true},
		{"a/#", "a/b/c", true}, {"#", "a/b", true}, {"#", "$SYS/x", false}, {"+/b", "$SYS/b", false},
		{"a/+/c", "a//c", true}, {"$share/g/a/+", "a/b", true}, {"a/b", "a/c", false}, {"a", "a/b", false},
	}
	for _, tc := range cases {
		if got := topicMatch(tc.filter, tc.topic); got != tc.want {
			t.Errorf("topicMatch(%q, %q) = %v", tc.filter, tc.topic, got)
		}
	}
}
