package doccheck

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Corpus is what users read: README.md and docs/*.md, by path relative to the repository.
type Corpus map[string]string

// ReadCorpus reads README.md and docs/*.md under the repository root.
func ReadCorpus(t testing.TB, repo string) Corpus {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repo, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	c := Corpus{}
	for _, f := range append(files, filepath.Join(repo, "README.md")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repo, f)
		c[rel] = string(b)
	}
	return c
}

// Sorted returns the file names in order.
func (c Corpus) Sorted() []string {
	out := make([]string, 0, len(c))
	for f := range c {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// Mentions reports whether any file contains s.
func (c Corpus) Mentions(re *regexp.Regexp) bool {
	for _, text := range c {
		if re.MatchString(text) {
			return true
		}
	}
	return false
}

// Invocation is a command line the docs give: the words after the program's name.
type Invocation struct {
	File  string
	Line  int
	Words []string
}

// Invocations finds the command lines of a program in code (fenced blocks and `code spans`): a word
// that is the program's name or a path ending in it (bin/gemba-agent), and what follows it up to
// the end of the line or span, a pipe, ;, && or a # comment. The name as the value of another
// program's flag (journalctl -u gemba-agent) or in a # comment is not a command line of it.
func (c Corpus) Invocations(program string) []Invocation {
	var out []Invocation
	for _, f := range c.Sorted() {
		fenced := false
		for i, line := range strings.Split(c[f], "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				fenced = !fenced
				continue
			}
			var code []string
			if fenced {
				code = []string{line}
			} else {
				for _, m := range codeSpan.FindAllStringSubmatch(line, -1) {
					code = append(code, m[1])
				}
			}
			for _, s := range code {
				out = append(out, invocations(s, program, f, i+1)...)
			}
		}
	}
	return out
}

func invocations(s, program, file string, line int) []Invocation {
	var out []Invocation
	words := strings.Fields(s)
	for i, w := range words {
		if strings.HasPrefix(w, "#") {
			break // a comment: prose
		}
		if w != program && !strings.HasSuffix(w, "/"+program) {
			continue
		}
		if i > 0 && strings.HasPrefix(words[i-1], "-") {
			continue // an argument of another program's flag: journalctl -u gemba-agent -f
		}
		inv := Invocation{File: file, Line: line}
		for _, a := range words[i+1:] {
			if a == "|" || a == ";" || a == "&&" || a == "||" || strings.HasPrefix(a, "#") || strings.HasSuffix(a, program) {
				break
			}
			inv.Words = append(inv.Words, a)
		}
		out = append(out, inv)
	}
	return out
}

var flagWord = regexp.MustCompile(`^--?([A-Za-z][A-Za-z0-9-]*)`)

// CheckCobraCLI fails t for each command or flag of root that the corpus names nowhere, and for
// each command line in the corpus that names a command or a flag root does not have. A command is
// documented by a command line naming it (`gemba-hub rules activate`), a flag by its --name
// anywhere or by its -shorthand in one of its command's lines (`models refit ... [-v]`).
func CheckCobraCLI(t testing.TB, root *cobra.Command, c Corpus) {
	t.Helper()
	prog := root.Name()
	used := map[*pflag.Flag]bool{}
	for _, inv := range c.Invocations(prog) {
		cmd, path, rest := root, prog, inv.Words
		for len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			sub := child(cmd, rest[0])
			if sub == nil {
				break
			}
			cmd, path, rest = sub, path+" "+sub.Name(), rest[1:]
		}
		line := prog + " " + strings.Join(inv.Words, " ")
		if cmd == root && len(rest) > 0 && command.MatchString(rest[0]) {
			t.Errorf("%s:%d: `%s`: %s has no command %q", inv.File, inv.Line, line, prog, rest[0])
			continue
		}
		for _, w := range rest {
			m := flagWord.FindStringSubmatch(strings.TrimLeft(w, "[("))
			if m == nil {
				continue
			}
			long := strings.HasPrefix(strings.TrimLeft(w, "[("), "--")
			var f *pflag.Flag
			switch {
			case long && m[1] == "help", !long && m[1] == "h":
				continue
			case long:
				if f = cmd.Flags().Lookup(m[1]); f == nil {
					f = cmd.InheritedFlags().Lookup(m[1])
				}
			case len(m[1]) == 1:
				if f = cmd.Flags().ShorthandLookup(m[1]); f == nil {
					f = cmd.InheritedFlags().ShorthandLookup(m[1])
				}
			default:
				continue // -name: not a cobra flag, nor a value that starts with -
			}
			if f == nil {
				t.Errorf("%s:%d: `%s`: `%s` has no flag %s", inv.File, inv.Line, line, path, m[0])
				continue
			}
			used[f] = true
		}
	}

	var walk func(cmd *cobra.Command, path string)
	walk = func(cmd *cobra.Command, path string) {
		t.Helper()
		if cmd != root && !c.Mentions(regexp.MustCompile(regexp.QuoteMeta(path)+`\b`)) {
			t.Errorf("command `%s` is documented nowhere in docs/ or README.md", path)
		}
		check := func(f *pflag.Flag) {
			t.Helper()
			if !used[f] && !c.Mentions(regexp.MustCompile(`--`+regexp.QuoteMeta(f.Name)+`\b`)) {
				t.Errorf("flag --%s of `%s` is documented nowhere in docs/ or README.md", f.Name, path)
			}
		}
		cmd.LocalNonPersistentFlags().VisitAll(check)
		cmd.PersistentFlags().VisitAll(check)
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() && sub.Name() != "help" && sub.Name() != "completion" {
				walk(sub, path+" "+sub.Name())
			}
		}
	}
	walk(root, prog)
}

var command = regexp.MustCompile(`^[a-z]+$`)

func child(cmd *cobra.Command, name string) *cobra.Command {
	for _, sub := range cmd.Commands() {
		if sub.Name() == name || sub.HasAlias(name) {
			return sub
		}
	}
	return nil
}
