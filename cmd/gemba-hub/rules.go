package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
)

func rulesCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "rules",
		Short: "Validate, compare and roll out rule set versions",
		Long: `Rule sets are YAML files of CEL rules (docs/rules.md). 'validate' and 'diff' of two files work
offline. The other commands store a file as an immutable version (its hash) in the rules bucket and
change the rules state on the decision log: every change records who (--by), why (--why), when, and
from → to, and every replica follows it within a second. Where a FILE is asked for, a stored version
(at least 8 of its hex digits) may be given instead.`,
	}
	c.AddCommand(rulesValidateCmd(), rulesDiffCmd(), rulesActivateCmd(), rulesRollbackCmd(), rulesShadowCmd(),
		rulesCanaryCmd(), rulesHistoryCmd())
	return c
}

func rulesValidateCmd() *cobra.Command {
	var file string
	var strict, info bool
	c := &cobra.Command{
		Use:   "validate RULES.yaml... [--strict] [--info] [-c hub.yaml]",
		Short: "Type-check and lint rule files (offline)",
		Long: `Load each rule file as a new version would be: YAML, fields, CEL types (FILE:LINE:COL for a
condition's error), then lint it (unreachable rules, conditions that never match, overlapping rules
with different actions, conflicts). With -c, a condition naming a feature the hub config does not
define is an error. Info findings (overlaps that the hit policy or priorities settle) are printed
with --info. Exits 1 on an error, and with --strict on a warning too.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts []rules.Option
			if file != "" {
				cfg, err := load(cmd, file)
				if err != nil {
					return err
				}
				opts = append(opts, rules.KnownFeatures(featureNames(cfg)...))
			}
			if !validateRuleFiles(cmd.OutOrStdout(), cmd.ErrOrStderr(), args, strict, info, opts...) {
				return exitError{1}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "", "hub config: conditions may name only its features")
	c.Flags().BoolVar(&strict, "strict", false, "warnings are errors")
	c.Flags().BoolVar(&info, "info", false, "print info findings too")
	return c
}

func featureNames(cfg *hub.Config) []string {
	names := make([]string, 0, len(cfg.Features))
	for _, f := range cfg.Features {
		names = append(names, f.Name)
	}
	return names
}

// validateRuleFiles prints each file's problems and findings (to errw) and a summary line per
// valid file (to out); it reports whether every file passed. Info findings are printed with info.
func validateRuleFiles(out, errw io.Writer, files []string, strict, info bool, opts ...rules.Option) bool {
	ok := true
	for _, f := range files {
		s, err := rules.LoadFile(f, opts...)
		if err != nil {
			ok = false
			var fe *rules.FileError
			if errors.As(err, &fe) {
				err = fe.Err
			}
			for _, l := range rules.Describe(f, err) {
				fmt.Fprintln(errw, l)
			}
			continue
		}
		count := map[rules.Severity]int{}
		for _, fd := range s.Lint() {
			count[fd.Severity]++
			if fd.Severity != rules.Info || info {
				fmt.Fprintln(errw, fd.Format(f))
			}
		}
		if count[rules.Error] > 0 || (strict && count[rules.Warning] > 0) {
			ok = false
			fmt.Fprintf(errw, "%s: not valid (%d errors, %d warnings%s)\n", f, count[rules.Error], count[rules.Warning],
				map[bool]string{true: ", --strict", false: ""}[strict])
			continue
		}
		fmt.Fprintf(out, "%s: valid (%s, version %s, %d rules, hit policy %s, %d warnings, %d infos)\n", f, s.Name(), s.Version()[:12],
			len(s.Rules()), s.Policy(), count[rules.Warning], count[rules.Info])
	}
	return ok
}

func rulesDiffCmd() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "diff A B [-c hub.yaml]",
		Short: "Compare two rule set versions rule by rule",
		Long: `A and B are rule files, or stored versions (at least 8 hex digits; needs -c to reach the rules
bucket). Prints the hit policy change and the rules added, removed and changed (each field, old → new).
Exits 0 whatever the difference.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var reg *versions.Registry
			if needsStore(args...) {
				if file == "" {
					cmd.PrintErrf("%s is not a file: give -c hub.yaml to read stored versions\n", strings.Join(notFiles(args...), ", "))
					return exitError{1}
				}
				return withRegistry(cmd, file, func(ctx context.Context, r *versions.Registry, _ *audit.Log) error {
					return diffArgs(ctx, cmd, r, args)
				})
			}
			return diffArgs(cmd.Context(), cmd, reg, args)
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "", "hub config (to read stored versions)")
	return c
}

func diffArgs(ctx context.Context, cmd *cobra.Command, reg *versions.Registry, args []string) error {
	var sets [2]*rules.Set
	for i, a := range args {
		s, err := loadRef(ctx, reg, a)
		if err != nil {
			cmd.PrintErrln(err)
			return exitError{1}
		}
		sets[i] = s
	}
	diffSets(cmd.OutOrStdout(), args[0], sets[0], args[1], sets[1])
	return nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func notFiles(args ...string) []string {
	var out []string
	for _, a := range args {
		if !isFile(a) {
			out = append(out, a)
		}
	}
	return out
}

func needsStore(args ...string) bool { return len(notFiles(args...)) > 0 }

// loadRef loads a rule file (strictly, as new) or a stored version (as stored).
func loadRef(ctx context.Context, reg *versions.Registry, ref string) (*rules.Set, error) {
	if isFile(ref) || reg == nil {
		s, err := rules.LoadFile(ref)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	v, err := reg.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	data, err := reg.Load(ctx, v)
	if err != nil {
		return nil, err
	}
	s, err := rules.LoadStored(data)
	if err != nil {
		return nil, fmt.Errorf("stored version %s: %s", v, strings.Join(rules.Describe(v, err), "; "))
	}
	return s, nil
}

// diffSets prints what changed from a to b, rule by rule (matched by name).
func diffSets(w io.Writer, nameA string, a *rules.Set, nameB string, b *rules.Set) {
	fmt.Fprintf(w, "--- %s (%s, version %s)\n+++ %s (%s, version %s)\n", nameA, a.Name(), a.Version()[:12], nameB, b.Name(), b.Version()[:12])
	if a.Version() == b.Version() {
		fmt.Fprintln(w, "same version: no difference a decision can see")
		return
	}
	field := func(what, old, new string) {
		if old != new {
			fmt.Fprintf(w, "  %s: %s → %s\n", what, old, new)
		}
	}
	if a.Name() != b.Name() || a.Policy() != b.Policy() || a.Description() != b.Description() {
		fmt.Fprintln(w, "rule set:")
		field("name", a.Name(), b.Name())
		field("hit policy", string(a.Policy()), string(b.Policy()))
		field("description", quote(a.Description()), quote(b.Description()))
	}
	ra, rb := a.Rules(), b.Rules()
	byName := func(rs []rules.Rule, name string) (rules.Rule, bool) {
		i := slices.IndexFunc(rs, func(r rules.Rule) bool { return r.Name == name })
		if i < 0 {
			return rules.Rule{}, false
		}
		return rs[i], true
	}
	for _, r := range ra {
		if _, ok := byName(rb, r.Name); !ok {
			fmt.Fprintf(w, "- rule %q (removed): when %s → %s\n", r.Name, oneLine(r.When), audit.FormatAction(r.Action))
		}
	}
	for _, r := range rb {
		if _, ok := byName(ra, r.Name); !ok {
			fmt.Fprintf(w, "+ rule %q (added, position %d, priority %d): when %s → %s\n", r.Name, r.Index, r.Priority, oneLine(r.When),
				audit.FormatAction(r.Action))
		}
	}
	for _, new := range rb {
		old, ok := byName(ra, new.Name)
		if !ok || sameRule(old, new) {
			continue
		}
		fmt.Fprintf(w, "~ rule %q:\n", new.Name)
		field("position", fmt.Sprint(old.Index), fmt.Sprint(new.Index))
		field("priority", fmt.Sprint(old.Priority), fmt.Sprint(new.Priority))
		field("description", quote(old.Description), quote(new.Description))
		field("when", oneLine(old.When), oneLine(new.When))
		oa, na := old.Action, new.Action
		field("action", string(oa.Kind), string(na.Kind))
		field("channels", strings.Join(oa.Channels, ","), strings.Join(na.Channels, ","))
		field("discount", fmt.Sprint(oa.Discount), fmt.Sprint(na.Discount))
		field("duration", oa.Duration.String(), na.Duration.String())
		field("audience", quote(oa.Audience), quote(na.Audience))
		field("reason", quote(oa.Reason), quote(na.Reason))
	}
}

func sameRule(a, b rules.Rule) bool {
	return a.Index == b.Index && a.Priority == b.Priority && a.Description == b.Description &&
		strings.TrimSpace(a.When) == strings.TrimSpace(b.When) && a.Action.Kind == b.Action.Kind &&
		slices.Equal(a.Action.Channels, b.Action.Channels) && a.Action.Discount == b.Action.Discount &&
		a.Action.Duration == b.Action.Duration && a.Action.Audience == b.Action.Audience && a.Action.Reason == b.Action.Reason
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func quote(s string) string { return fmt.Sprintf("%q", s) }

// withRegistry loads the hub config, connects, binds the decision log and the rules bucket, and
// runs fn; it ends on SIGINT or SIGTERM. Both are bound as they are, never created nor changed,
// whether the command reads or changes the rules state: their settings may be a newer release's,
// and only the hub (gemba-hub run) creates and configures them. Missing, they are the error.
func withRegistry(cmd *cobra.Command, file string, fn func(context.Context, *versions.Registry, *audit.Log) error) error {
	return withHub(cmd, file, func(ctx context.Context, cfg *hub.Config, js jetstream.JetStream) error {
		log, err := audit.Bind(ctx, js, cfg.Audit, nil)
		if err != nil {
			cmd.PrintErrln(err)
			return exitError{1}
		}
		reg, err := versions.Bind(ctx, js, cfg.Rules, log, nil, rules.KnownFeatures(featureNames(cfg)...))
		if err != nil {
			cmd.PrintErrln(err)
			return exitError{1}
		}
		return fn(ctx, reg, log)
	})
}

// changeFlags are the flags of every command that changes the rules state.
type changeFlags struct {
	file, by, why string
}

func (f *changeFlags) add(c *cobra.Command) {
	c.Flags().StringVarP(&f.file, "config", "c", "/etc/gemba/hub.yaml", "hub config (NATS, the decision log, the rules bucket)")
	c.Flags().StringVar(&f.by, "by", os.Getenv("USER"), "who makes the change (default $USER)")
	c.Flags().StringVar(&f.why, "why", "", "why (required: it is recorded with the change)")
}

func (f *changeFlags) check(cmd *cobra.Command) error {
	if strings.TrimSpace(f.by) == "" {
		cmd.PrintErrln("--by is required (who makes the change; $USER is not set)")
		return exitError{2}
	}
	if strings.TrimSpace(f.why) == "" {
		cmd.PrintErrln("--why is required: every rules change records why it was made")
		return exitError{2}
	}
	return nil
}

// storeRef stores a rule file and returns its version, or resolves a stored version's prefix.
func storeRef(ctx context.Context, cmd *cobra.Command, reg *versions.Registry, ref, by string) (string, error) {
	if !isFile(ref) {
		v, err := reg.Resolve(ctx, ref)
		if err != nil {
			cmd.PrintErrf("%s: not a file, and %v\n", ref, err)
			return "", exitError{1}
		}
		return v, nil
	}
	data, err := readRuleFile(ref)
	if err != nil {
		cmd.PrintErrln(err)
		return "", exitError{1}
	}
	v, err := reg.Store(ctx, data, by)
	if err != nil {
		for _, l := range rules.Describe(ref, err) {
			cmd.PrintErrln(l)
		}
		return "", exitError{1}
	}
	return v, nil
}

func readRuleFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, rules.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// printUnchanged says that the version asked for is already active (nothing recorded).
func printUnchanged(w io.Writer, c audit.Change) {
	fmt.Fprintf(w, "%s is already active (change #%d): nothing recorded\n", short(c.Active), c.Seq)
}

func printChange(w io.Writer, c audit.Change) {
	fmt.Fprintf(w, "change #%d: %s\n", c.Seq, formatChange(c))
	fmt.Fprintf(w, "rules now: active %s", orNone(c.Active))
	if c.Shadow != "" {
		fmt.Fprintf(w, ", shadow %s", short(c.Shadow))
	}
	if c.Canary != nil {
		fmt.Fprintf(w, ", canary %s for %g of %ss", short(c.Canary.Version), c.Canary.Share, c.Canary.By)
	}
	fmt.Fprintln(w)
}

func formatChange(c audit.Change) string {
	s := fmt.Sprintf("%s %s → %s by %s", c.Op, orNone(c.From), orNone(c.To), c.By)
	if c.Canary != nil && c.Op == audit.OpCanary {
		s += fmt.Sprintf(" (%g of %ss)", c.Canary.Share, c.Canary.By)
	}
	if c.Why != "" {
		s += fmt.Sprintf(": %q", c.Why)
	}
	return s
}

func orNone(v string) string {
	if v == "" {
		return "(none)"
	}
	return short(v)
}

func short(v string) string { return v[:min(len(v), 12)] }

// printHistory prints one line per change, oldest first.
func printHistory(w io.Writer, cs []audit.Change) {
	if len(cs) == 0 {
		fmt.Fprintln(w, "no rules change yet")
		return
	}
	for _, c := range cs {
		fmt.Fprintf(w, "#%-6d %s  %s\n", c.Seq, c.At.UTC().Format(time.RFC3339), formatChange(c))
	}
}

func changeCmd(use, short, long string, args cobra.PositionalArgs, extra func(*cobra.Command),
	run func(ctx context.Context, cmd *cobra.Command, reg *versions.Registry, args []string, f *changeFlags) (audit.Change, error)) *cobra.Command {
	var f changeFlags
	c := &cobra.Command{
		Use: use, Short: short, Long: long, Args: args,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(cmd); err != nil {
				return err
			}
			return withRegistry(cmd, f.file, func(ctx context.Context, reg *versions.Registry, _ *audit.Log) error {
				ch, err := run(ctx, cmd, reg, args, &f)
				var ee exitError
				if errors.As(err, &ee) {
					return err
				}
				if errors.Is(err, versions.ErrUnchanged) {
					printUnchanged(cmd.OutOrStdout(), ch)
					return nil
				}
				if err != nil {
					cmd.PrintErrln(err)
					return exitError{1}
				}
				printChange(cmd.OutOrStdout(), ch)
				return nil
			})
		},
	}
	f.add(c)
	if extra != nil {
		extra(c)
	}
	return c
}

func rulesActivateCmd() *cobra.Command {
	return changeCmd("activate FILE|VERSION --why TEXT [--by NAME] -c hub.yaml",
		"Store a rule file as a version and make it the active one",
		`Validate and store the file (its version is the hash of its rules; storing it again changes
nothing), then make it active on every replica. The version it replaces goes on the rollback stack.`,
		cobra.ExactArgs(1), nil,
		func(ctx context.Context, cmd *cobra.Command, reg *versions.Registry, args []string, f *changeFlags) (audit.Change, error) {
			v, err := storeRef(ctx, cmd, reg, args[0], f.by)
			if err != nil {
				return audit.Change{}, err
			}
			return reg.Activate(ctx, v, f.by, f.why)
		})
}

func rulesRollbackCmd() *cobra.Command {
	return changeCmd("rollback --why TEXT [--by NAME] -c hub.yaml", "Return to the previous active version",
		`Make the version active before the current one active again, on every replica within a second.
Decisions taken under the version rolled back from after this change are refused by the decision log.`,
		cobra.NoArgs, nil,
		func(ctx context.Context, _ *cobra.Command, reg *versions.Registry, _ []string, f *changeFlags) (audit.Change, error) {
			return reg.Rollback(ctx, f.by, f.why)
		})
}

func rulesShadowCmd() *cobra.Command {
	var clear bool
	return changeCmd("shadow FILE|VERSION|--clear --why TEXT [--by NAME] -c hub.yaml",
		"Evaluate a version next to the active one, recording its decisions without acting",
		`A shadow version sees the same inputs as the active one; its decisions are recorded with what the
active version decided (the disagreement) and never acted on. --clear ends the shadow.`,
		cobra.MaximumNArgs(1), func(c *cobra.Command) { c.Flags().BoolVar(&clear, "clear", false, "end the shadow") },
		func(ctx context.Context, cmd *cobra.Command, reg *versions.Registry, args []string, f *changeFlags) (audit.Change, error) {
			if clear == (len(args) == 1) {
				cmd.PrintErrln("give a FILE or VERSION, or --clear")
				return audit.Change{}, exitError{2}
			}
			v := ""
			if !clear {
				var err error
				if v, err = storeRef(ctx, cmd, reg, args[0], f.by); err != nil {
					return audit.Change{}, err
				}
			}
			return reg.Shadow(ctx, v, f.by, f.why)
		})
}

func rulesCanaryCmd() *cobra.Command {
	var clear bool
	var share float64
	var unit string
	return changeCmd("canary FILE|VERSION --share 0.1 --unit sku|site|--clear --why TEXT [--by NAME] -c hub.yaml",
		"Let a version act for a share of the SKUs or sites",
		`The canary version decides instead of the active one for the stated share of SKUs or sites (a
stable choice per version and unit); the rest stay with the active version. --clear ends it;
activating the canary's version ends it too.`,
		cobra.MaximumNArgs(1), func(c *cobra.Command) {
			c.Flags().BoolVar(&clear, "clear", false, "end the canary")
			c.Flags().Float64Var(&share, "share", 0, "share of the units in the canary, in (0, 1]")
			c.Flags().StringVar(&unit, "unit", "sku", "what the share counts: sku or site")
		},
		func(ctx context.Context, cmd *cobra.Command, reg *versions.Registry, args []string, f *changeFlags) (audit.Change, error) {
			if clear == (len(args) == 1) {
				cmd.PrintErrln("give a FILE or VERSION with --share, or --clear")
				return audit.Change{}, exitError{2}
			}
			if clear {
				return reg.Canary(ctx, "", 0, "", f.by, f.why)
			}
			if !(share > 0 && share <= 1) || (unit != "sku" && unit != "site") {
				cmd.PrintErrf("--share %v --unit %q: give a share in (0, 1] and a unit sku or site\n", share, unit)
				return audit.Change{}, exitError{2}
			}
			v, err := storeRef(ctx, cmd, reg, args[0], f.by)
			if err != nil {
				return audit.Change{}, err
			}
			return reg.Canary(ctx, v, share, unit, f.by, f.why)
		})
}

func rulesHistoryCmd() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "history -c hub.yaml",
		Short: "List every rules change, oldest first",
		Long:  `One line per change: sequence, time, op, from → to, by, why. The last line is the rules state.`,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withRegistry(cmd, file, func(ctx context.Context, _ *versions.Registry, log *audit.Log) error {
				cs, err := log.Changes(ctx)
				if err != nil {
					cmd.PrintErrln(err)
					return exitError{1}
				}
				printHistory(cmd.OutOrStdout(), cs)
				return nil
			})
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/hub.yaml", "hub config")
	return c
}
