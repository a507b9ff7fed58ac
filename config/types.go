package config

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ByteSize is a size in bytes that reads from YAML as "2GiB", "512MB", "64KiB" or a plain number.
// KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024.
type ByteSize int64

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// ParseByteSize parses a size such as "2GiB".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(t, "_", ""), 64)
	if err != nil || f < 0 || math.IsNaN(f) || f*mult > math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q (use a number with a unit: 512MB, 64KiB, 2GiB)", s)
	}
	return ByteSize(f * mult), nil
}

// UnmarshalConfig implements Unmarshaler.
func (b *ByteSize) UnmarshalConfig(d *Decoder, n *yaml.Node, path string) {
	s, ok := d.Scalar(n, path)
	if !ok || s == "" {
		return
	}
	v, err := ParseByteSize(s)
	if err != nil {
		d.Errorf(n, path, "%v", err)
		return
	}
	*b = v
}

func (b ByteSize) String() string {
	v := int64(b)
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v >= u.m && v%u.m == 0 {
			return strconv.FormatInt(v/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(v, 10) + "B"
}

// MarshalJSON renders the size in its readable form (for the effective config).
func (b ByteSize) MarshalJSON() ([]byte, error) { return json.Marshal(b.String()) }

// Secret is a credential. In YAML it is a value (usually "${ENV_VAR}") or a mapping {file: PATH}
// whose file content (trailing newline removed) is the secret. It never prints: String, JSON and
// slog all show "[redacted]".
type Secret struct {
	value string
	file  string
}

// NewSecret wraps a value.
func NewSecret(v string) Secret { return Secret{value: v} }

// Value returns the secret itself. Pass it to the library that needs it and nowhere else.
func (s Secret) Value() string { return s.value }

// IsSet reports whether a value was given.
func (s Secret) IsSet() bool { return s.value != "" }

func (s Secret) String() string {
	if s.value == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue keeps secrets out of logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON keeps secrets out of the effective config; the file path is shown when one was used.
func (s Secret) MarshalJSON() ([]byte, error) {
	if s.file != "" {
		return json.Marshal(map[string]string{"file": s.file})
	}
	return json.Marshal(s.String())
}

// maxSecret bounds a secret read from a file (a password, a token, a bcrypt hash, a PEM key).
const maxSecret = 64 << 10

// UnmarshalConfig implements Unmarshaler.
func (s *Secret) UnmarshalConfig(d *Decoder, n *yaml.Node, path string) {
	if n.Kind == yaml.MappingNode {
		var src struct {
			File string `yaml:"file"`
		}
		d.DecodeMapping(n, path, &src)
		if src.File == "" {
			d.Errorf(n, path, "a secret mapping needs file: PATH")
			return
		}
		data, err := ReadFile(src.File, maxSecret) // a secret is a line: /dev/zero or a log is a mistake
		if err != nil {
			d.Errorf(n, Join(path, "file"), "cannot read secret: %v", err)
			return
		}
		v := strings.TrimRight(string(data), "\r\n")
		if v == "" {
			// As ${VAR} set but empty: an empty secret would read as none (an API open to all).
			d.Errorf(n, Join(path, "file"), "secret file %s is empty", src.File)
			return
		}
		*s = Secret{value: v, file: src.File}
		return
	}
	v, ok := d.Scalar(n, path)
	if ok {
		*s = Secret{value: v}
	}
}

// TokenEqual compares a presented token with the expected one in constant time, lengths included:
// both are hashed first (subtle.ConstantTimeCompare returns at once on a length difference, which
// tells a caller how long the token is).
func TokenEqual(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}
