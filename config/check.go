package config

import (
	"bytes"
	"encoding/json"

	"net/url"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// CheckFile reports field when path (if set) is not a readable file, so that a missing
// certificate or key fails at validate rather than at the first connect.
func (r Report) CheckFile(field, path string) {
	if path == "" {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		r.Errorf(field, "cannot read: %v", err)
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		r.Errorf(field, "%s is a directory, not a file", path)
	}
}

// Locate finds where a value was written, for cross-checks that know a value but not its place:
// the first scalar in document order under field whose key is key and whose (expanded) text is
// value. The path returned is relative to the report, ready for Errorf.
func (r Report) Locate(field, key, value string) (string, bool) {
	base := r.Path(field)
	var best string
	var bestNode *yaml.Node
	for p, n := range r.d.pos {
		if n.Kind != yaml.ScalarNode || n.Value != value || !under(p, base) || !(p == key || strings.HasSuffix(p, "."+key)) {
			continue
		}
		if bestNode == nil || n.Line < bestNode.Line || (n.Line == bestNode.Line && (n.Column < bestNode.Column || (n.Column == bestNode.Column && p < best))) {
			best, bestNode = p, n
		}
	}
	if bestNode == nil {
		return "", false
	}
	rel := strings.TrimPrefix(best, r.path)
	return strings.TrimPrefix(rel, "."), true
}

// under reports whether path p is base or inside it.
func under(p, base string) bool {
	if base == "" {
		return true
	}
	rest, ok := strings.CutPrefix(p, base)
	return ok && (rest == "" || rest[0] == '.' || rest[0] == '[')
}

// RedactURL hides the credentials of a URL with user information (nats://user:password@host,
// nats://token@host, or user:password@host without a scheme): logs, status pages and printed configs
// show "[redacted]@host" instead; credential-like query parameters (?token=, ?sig=) read "redacted".
// Text that is not such a URL comes back unchanged.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		// A password with a stray % makes the URL unparsable: hide everything before the host.
		i := strings.LastIndex(s, "@")
		if i < 0 {
			return s
		}
		if scheme, rest, ok := strings.Cut(s[:i], "://"); ok && !strings.Contains(scheme, "/") && rest != "" {
			return scheme + "://[redacted]" + s[i:]
		}
		return "[redacted]" + s[i:]
	}
	if u.User == nil {
		if i := strings.LastIndex(s, "@"); u.Opaque != "" && i >= 0 && u.Scheme != "mailto" {
			return "[redacted]" + s[i:] // user:password@host, without a scheme, reads as scheme "user"
		}
		if q := redactQuery(u.RawQuery); q != u.RawQuery {
			u.RawQuery = q
			return u.String()
		}
		return s
	}
	u.User = nil
	u.RawQuery = redactQuery(u.RawQuery)
	out := u.String()
	scheme, rest, ok := strings.Cut(out, "://")
	if !ok {
		return "[redacted]@" + out
	}
	return scheme + "://[redacted]@" + rest
}

// secretParams are the words that mark a URL query parameter as a credential (?token=, ?sig=,
// ?api_key=, ?password=...).
var secretParams = []string{"token", "secret", "pass", "pwd", "key", "sig", "auth", "jwt", "credential"}

// redactQuery replaces the values of credential-like parameters of a raw query by "redacted".
func redactQuery(raw string) string {
	if raw == "" {
		return raw
	}
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		k, _, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		name := strings.ToLower(k)
		if dk, err := url.QueryUnescape(k); err == nil {
			name = strings.ToLower(dk)
		}
		for _, w := range secretParams {
			if strings.Contains(name, w) {
				parts[i] = k + "=redacted"
				break
			}
		}
	}
	return strings.Join(parts, "&")
}

// RedactJSON applies RedactURL to every string in a JSON document that holds a URL, keeping the
// document's layout and key order (for printing an effective config). data must be valid JSON.
func RedactJSON(data []byte) []byte {
	var out bytes.Buffer
	for i := 0; i < len(data); {
		if data[i] != '"' {
			out.WriteByte(data[i])
			i++
			continue
		}
		j := i + 1
		for j < len(data) && data[j] != '"' {
			if data[j] == '\\' {
				j++
			}
			j++
		}
		lit := data[i:min(j+1, len(data))]
		var s string
		if bytes.Contains(lit, []byte("://")) && json.Unmarshal(lit, &s) == nil {
			if r := RedactURL(s); r != s {
				if enc, err := json.Marshal(r); err == nil {
					lit = enc
				}
			}
		}
		out.Write(lit)
		i = j + 1
	}
	return out.Bytes()
}
