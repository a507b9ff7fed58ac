// Package kvkey maps free-form identifiers (SKUs, sites, signal names) onto NATS KV key tokens and
// back, one-to-one, so every state bucket names its entries the same way.
package kvkey

import (
	"fmt"
	"strings"
)

// A KV key allows only [-/_=.a-zA-Z0-9] and '.' separates tokens. Escape keeps letters, digits,
// '-', '_' and '/' and writes every other byte (also '.', '=' and each byte of a multi-byte UTF-8
// character) as '=' and two upper-case hex digits: "Plant 1" → "Plant=201", "A.B=C" → "A=2EB=3DC".

func keep(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '/'
}

const hexDigits = "0123456789ABCDEF"

// Escape returns s as one KV key token.
func Escape(s string) string {
	var b strings.Builder
	EscapeTo(&b, s)
	return b.String()
}

// EscapeTo writes s as one KV key token to b.
func EscapeTo(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keep(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
}

// Join escapes each part and joins them with '.'.
func Join(parts ...string) string {
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('.')
		}
		EscapeTo(&b, p)
	}
	return b.String()
}

// Split reverses Join for a key of n parts.
func Split(key string, n int) ([]string, error) {
	toks := strings.Split(key, ".")
	if len(toks) != n {
		return nil, fmt.Errorf("key %q: %d parts, want %d", key, len(toks), n)
	}
	for i, t := range toks {
		u, err := Unescape(t)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		toks[i] = u
	}
	return toks, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Unescape reverses Escape; it refuses anything Escape cannot produce.
func Unescape(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("empty token")
	}
	if strings.IndexByte(s, '=') < 0 {
		for i := 0; i < len(s); i++ {
			if !keep(s[i]) {
				return "", fmt.Errorf("byte %q not allowed in a key token", s[i])
			}
		}
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keep(c) {
			b.WriteByte(c)
			continue
		}
		if c != '=' || i+2 >= len(s) {
			return "", fmt.Errorf("bad escape at byte %d of %q", i, s)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		v := hi<<4 | lo
		if !ok1 || !ok2 || keep(v) {
			return "", fmt.Errorf("bad escape at byte %d of %q", i, s)
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), nil
}
