package inventory

import (
	"fmt"
	"strings"
)

// Keys are "<site>.<sku>". NATS KV keys allow only [-/_=.a-zA-Z0-9] and '.' separates tokens, so each part is
// escaped: letters, digits, '-', '_' and '/' stay as they are; every other byte (also '.', '=' and each byte of
// a multi-byte UTF-8 character) becomes '=' and two upper-case hex digits. "Plant 1" → "Plant=201",
// "A.B=C" → "A=2EB=3DC". The mapping is one-to-one, so the key is the identity of the site × SKU pair.

func keepByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '/'
}

const hexDigits = "0123456789ABCDEF"

func escapeTo(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keepByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
}

// keyOf returns the KV key of a site × SKU pair (both non-empty).
func keyOf(site, sku string) string {
	var b strings.Builder
	b.Grow(len(site) + len(sku) + 1)
	escapeTo(&b, site)
	b.WriteByte('.')
	escapeTo(&b, sku)
	return b.String()
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

func unescape(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("empty part")
	}
	if strings.IndexByte(s, '=') < 0 {
		return s, nil // the common case shares the key's bytes
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '=' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated escape at byte %d", i)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("bad escape %q at byte %d", s[i:i+3], i)
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}

// splitKey returns the site and SKU of a key written by keyOf.
func splitKey(key string) (site, sku string, err error) {
	a, z, ok := strings.Cut(key, ".")
	if !ok || strings.IndexByte(z, '.') >= 0 {
		return "", "", fmt.Errorf("key %q: want <site>.<sku>", key)
	}
	if site, err = unescape(a); err != nil {
		return "", "", fmt.Errorf("key %q: site: %w", key, err)
	}
	if sku, err = unescape(z); err != nil {
		return "", "", fmt.Errorf("key %q: sku: %w", key, err)
	}
	return site, sku, nil
}
