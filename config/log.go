package config

import (
	"fmt"
	"io"
	"log/slog"
)

// Log selects the log level and format of a program (the agent's agent.log, the hub's hub.log).
type Log struct {
	Level  string `yaml:"level" json:"level"`   // debug, info, warn, error
	Format string `yaml:"format" json:"format"` // json or text
}

// Validate checks level and format.
func (l *Log) Validate(r Report) {
	if _, err := ParseLevel(l.Level); err != nil {
		r.Errorf("level", "%v", err)
	}
	if l.Format != "json" && l.Format != "text" {
		r.Errorf("format", "must be json or text, got %q", l.Format)
	}
}

// ParseLevel parses a log level name.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
	}
	return l, nil
}

// NewLogger returns a JSON or text logger writing to w (an unknown level reads as info).
func (l Log) NewLogger(w io.Writer) *slog.Logger {
	lvl, _ := ParseLevel(l.Level)
	o := &slog.HandlerOptions{Level: lvl, ReplaceAttr: DurationText}
	if l.Format == "text" {
		return slog.New(slog.NewTextHandler(w, o))
	}
	return slog.New(slog.NewJSONHandler(w, o))
}

// DurationText is a slog ReplaceAttr that writes a time.Duration as its String() (1.5s): slog's JSON
// handler would write nanoseconds, which nobody reading a journal converts.
func DurationText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}
