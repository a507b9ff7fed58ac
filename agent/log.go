package agent

import (
	"io"
	"log/slog"

	"github.com/gemba-io/gemba/config"
)

// NewLogger returns a JSON or text logger at level. Durations are written as text (1.5s) in both
// formats: slog's JSON handler would write nanoseconds, which nobody reading a journal converts.
func NewLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	o := &slog.HandlerOptions{Level: level, ReplaceAttr: config.DurationText}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, o))
	}
	return slog.New(slog.NewJSONHandler(w, o))
}
