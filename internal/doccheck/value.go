package doccheck

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/gemba-io/gemba/config"
)

var (
	byteSize = reflect.TypeFor[config.ByteSize]()
	secret   = reflect.TypeFor[config.Secret]()
)

// SameValue compares a documented default with the code's value. comparable is false when the text
// is not a literal of the value's type ("host name", "`max_bytes/512` in [1MiB, 4MiB]", another
// key's name): such defaults are descriptions, not values. got is the code's value as the doc
// would write it.
func SameValue(v reflect.Value, text string) (same, comparable bool, got string) {
	text = strings.Trim(strings.TrimSpace(text), `"`)
	t := v.Type()
	switch {
	case t == secret || text == "unlimited":
		return false, false, ""
	case t == duration:
		d, ok := parseDuration(text)
		return ok && d == time.Duration(v.Int()), ok, time.Duration(v.Int()).String()
	case t == byteSize:
		b, err := config.ParseByteSize(strings.ReplaceAll(text, " ", ""))
		return err == nil && int64(b) == v.Int(), err == nil, config.ByteSize(v.Int()).String()
	case reflect.PointerTo(t).Implements(unmarshaler):
		// A type that reads itself (memory_limit: auto): compare with how it renders.
		out, err := json.Marshal(v.Interface())
		var s string
		if err != nil || json.Unmarshal(out, &s) != nil || strings.Contains(text, " ") {
			return false, false, ""
		}
		return s == text, true, s
	}
	switch t.Kind() {
	case reflect.Bool:
		b, err := strconv.ParseBool(text)
		return err == nil && b == v.Bool(), err == nil, strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(strings.ReplaceAll(text, "_", ""), 10, 64)
		return err == nil && n == v.Int(), err == nil, strconv.FormatInt(v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(strings.ReplaceAll(text, "_", ""), 10, 64)
		return err == nil && n == v.Uint(), err == nil, strconv.FormatUint(v.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(text, 64)
		return err == nil && f == v.Float(), err == nil, strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case reflect.String:
		if strings.ContainsAny(text, " <") || (v.String() == "" && IsKeyRef(text)) {
			return false, false, ""
		}
		return text == v.String(), true, v.String()
	case reflect.Slice:
		if t.Elem().Kind() != reflect.String || !strings.HasPrefix(text, "[") || !strings.HasSuffix(text, "]") {
			return false, false, ""
		}
		var want []string
		if in := strings.TrimSpace(text[1 : len(text)-1]); in != "" {
			for _, e := range strings.Split(in, ",") {
				want = append(want, strings.TrimSpace(e))
			}
		}
		have := make([]string, v.Len())
		for i := range have {
			have[i] = v.Index(i).String()
		}
		return fmt.Sprint(want) == fmt.Sprint(have), true, "[" + strings.Join(have, ", ") + "]"
	}
	return false, false, ""
}

// parseDuration reads a Go duration, or "N days".
func parseDuration(s string) (time.Duration, bool) {
	if n, ok := strings.CutSuffix(s, " days"); ok {
		d, err := strconv.Atoi(n)
		return time.Duration(d) * 24 * time.Hour, err == nil
	}
	if s == "0" {
		return 0, true
	}
	d, err := time.ParseDuration(s)
	return d, err == nil
}
