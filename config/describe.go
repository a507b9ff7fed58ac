package config

import (
	"errors"
	"fmt"
)

// Describe turns a load error into lines for a terminal: each problem as FILE:LINE: PATH: MESSAGE,
// or FILE:LINE:COLUMN: MESSAGE for a problem with the text itself (syntax, bytes), where the column
// is what finds it. Other errors give one line.
func Describe(file string, err error) []string {
	var ps Problems
	if !errors.As(err, &ps) {
		if errors.Is(err, ErrTooLarge) {
			return []string{err.Error()} // ReadFile's error already names the file
		}
		return []string{file + ": " + err.Error()}
	}
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		f := file
		if p.File != "" {
			f = p.File // one of several merged files (a conf.d entry)
		}
		loc := f
		switch {
		case p.Line > 0 && p.Path == "" && p.Column > 0:
			loc = fmt.Sprintf("%s:%d:%d", f, p.Line, p.Column)
		case p.Line > 0:
			loc = fmt.Sprintf("%s:%d", f, p.Line)
		}
		if p.Path != "" {
			out = append(out, loc+": "+p.Path+": "+p.Msg)
		} else {
			out = append(out, loc+": "+p.Msg)
		}
	}
	return out
}
