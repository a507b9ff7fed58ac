package rules

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/config"
)

var hexVersion = regexp.MustCompile(`^[0-9a-f]{64}$`)

// FuzzLoad feeds the loader arbitrary files (seeded from testdata/fuzz/FuzzLoad: the example
// configs and broken variants of them). Whatever the input: no panic; an error is every problem
// placed in the file; a loaded set has a stable version, loads as a stored version too, and
// evaluates an empty input without panicking.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("name: x\nhit_policy: first\nrules:\n  - name: a\n    when: sku.id == 'A'\n    hold: {channels: [web], reason: r}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Load(data)
		if err != nil {
			var ps config.Problems
			if !errors.As(err, &ps) {
				if strings.Contains(err.Error(), "CEL environment") {
					t.Fatalf("environment: %v", err)
				}
				t.Fatalf("error %T is not config.Problems: %v", err, err)
			}
			for _, p := range ps {
				if strings.HasSuffix(p.Path, ".when") && p.Line <= 0 {
					t.Errorf("a condition's problem without a line: %+v", p)
				}
				if p.Msg == "" {
					t.Errorf("empty message: %+v", p)
				}
			}
			return
		}
		if !hexVersion.MatchString(s.Version()) {
			t.Fatalf("version %q", s.Version())
		}
		again, err := Load(data)
		if err != nil || again.Version() != s.Version() {
			t.Fatalf("second load: %v, version %s then %s", err, s.Version(), again.Version())
		}
		stored, err := LoadStored(data)
		if err != nil || stored.Version() != s.Version() {
			t.Fatalf("valid set refused as stored: %v", err)
		}
		res := s.Evaluate(&Input{})
		if len(res.Trace) == 0 || len(res.Trace) > len(s.Rules()) || (s.Policy() == First && len(res.Matches) > 1) {
			t.Fatalf("result %+v", res)
		}
		if len(s.Rules()) <= 3 {
			s.Lint()
		}
	})
}
