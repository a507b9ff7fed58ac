package config

import (
	"fmt"
	"strings"
)

// Checks collects a section's problems as (field, message) pairs, for a library whose config is
// checked both in a file (Report, with the file's lines) and when opened by code (Err, without).
type Checks [][2]string

// Add records a problem of field.
func (c *Checks) Add(field, format string, args ...any) {
	*c = append(*c, [2]string{field, fmt.Sprintf(format, args...)})
}

// Report writes every problem to r (the field relative to r's path).
func (c Checks) Report(r Report) {
	for _, p := range c {
		r.Errorf(p[0], "%s", p[1])
	}
}

// Err joins every problem into one error naming the section; nil without problems.
func (c Checks) Err(section string) error {
	if len(c) == 0 {
		return nil
	}
	msg := make([]string, len(c))
	for i, p := range c {
		msg[i] = p[0] + ": " + p[1]
	}
	return fmt.Errorf("%s config: %s", section, strings.Join(msg, "; "))
}
