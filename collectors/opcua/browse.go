package opcua

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// BrowseOptions says where and how deep `gemba-agent browse` walks.
type BrowseOptions struct {
	Endpoint    string
	Root        string // node id to start from (ns=/nsu= forms); default the Objects folder, i=85
	Depth       int    // levels below Root; default 5
	Security    Security
	Auth        Auth
	Certificate Certificate
	Trust       Trust
	DataDir     string // where a generated client certificate and trust-on-first-use live
	Agent       string
	Timeout     time.Duration // connect and per-request timeout; default 10s
	// SignalPrefix is put in front of every suggested signal name ("line1.press.").
	SignalPrefix string
	// IncludeServer also walks the Server object (i=2253): the server's own status and
	// diagnostics, dozens of variables that are not plant signals. Off by default.
	IncludeServer bool
	Logger        *slog.Logger
}

// browsedVar is one variable found.
type browsedVar struct {
	id     *ua.NodeID
	path   []string
	dtype  string
	signal string
}

// Browse walks the address space below Root and writes ready-to-paste YAML `nodes:` entries with
// nsu= ids (stable when the server re-indexes namespaces), data types and suggested signal names.
func Browse(ctx context.Context, opts BrowseOptions, w io.Writer) error {
	cfg := NewConfig()
	cfg.Endpoint = opts.Endpoint
	if opts.Security.Policy != "" {
		cfg.Security.Policy = opts.Security.Policy
	}
	if opts.Security.Mode != "" {
		cfg.Security.Mode = opts.Security.Mode
	}
	cfg.Auth, cfg.Certificate, cfg.Trust = opts.Auth, opts.Certificate, opts.Trust
	if opts.Timeout > 0 {
		cfg.Timeouts.Connect, cfg.Timeouts.Request = opts.Timeout, opts.Timeout
	}
	if opts.Depth <= 0 {
		opts.Depth = 5
	}
	if opts.Root == "" {
		opts.Root = "i=85"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ref, err := parseNodeRef(opts.Root)
	if err != nil {
		return fmt.Errorf("browse root: %w", err)
	}
	s, err := connect(ctx, connectOptions{cfg: cfg, dataDir: opts.DataDir, agent: opts.Agent, logger: opts.Logger})
	if err != nil {
		return fmt.Errorf("browse %s: %w", opts.Endpoint, err)
	}
	defer s.close()
	root, err := ref.resolve(s.namespaces)
	if err != nil {
		return fmt.Errorf("browse root %s: %w", opts.Root, err)
	}
	b := &browser{c: s.client, seen: map[string]bool{}, listed: map[string]bool{}, skipServer: !opts.IncludeServer}
	if err := b.walk(ctx, root, nil, opts.Depth); err != nil {
		return fmt.Errorf("browse %s: %w", opts.Endpoint, err)
	}
	if err := b.readTypes(ctx, batchSize(s.limits.MaxNodesPerRead, 0)); err != nil {
		return fmt.Errorf("browse %s: read data types: %w", opts.Endpoint, err)
	}
	used := map[string]int{}
	for _, v := range b.vars {
		name := opts.SignalPrefix + signalName(v.path)
		used[name]++
		if n := used[name]; n > 1 {
			name += "_" + strconv.Itoa(n)
		}
		v.signal = name
	}
	fmt.Fprintf(w, "# gemba-agent browse %s (root %s, depth %d, security %s/%s): %d variables\n",
		opts.Endpoint, opts.Root, opts.Depth, policyName(s.endpoint.SecurityPolicyURI), modeName(s.endpoint.SecurityMode), len(b.vars))
	fmt.Fprintln(w, "nodes:")
	for _, v := range b.vars {
		line := fmt.Sprintf("  - {node: %s, signal: %s", strconv.Quote(expandedString(v.id, s.namespaces)), v.signal)
		if v.dtype != "" {
			line += ", type: " + v.dtype
		}
		if _, err := fmt.Fprintln(w, line+"}"); err != nil {
			return err
		}
	}
	return nil
}

type browser struct {
	c          *opcua.Client
	seen       map[string]bool // nodes walked
	listed     map[string]bool // variables listed: a variable reached by two paths is listed once
	skipServer bool
	vars       []*browsedVar
}

// walk follows hierarchical references below n. Properties (HasProperty) are metadata, not
// signals, and are skipped; so is the Server object unless asked for.
func (b *browser) walk(ctx context.Context, n *ua.NodeID, path []string, depth int) error {
	if depth < 0 || b.seen[n.String()] {
		return nil
	}
	b.seen[n.String()] = true
	refs, err := b.c.Node(n).References(ctx, id.HierarchicalReferences, ua.BrowseDirectionForward,
		ua.NodeClassObject|ua.NodeClassVariable, true)
	if err != nil {
		return fmt.Errorf("browse %s: %w", n, err)
	}
	for _, r := range refs {
		if r.NodeID == nil || r.NodeID.NodeID == nil || r.NodeID.HasServerIndex() {
			continue
		}
		if r.ReferenceTypeID != nil && r.ReferenceTypeID.IntID() == id.HasProperty && r.ReferenceTypeID.Namespace() == 0 {
			continue
		}
		child := r.NodeID.NodeID
		if b.skipServer && child.Namespace() == 0 && child.IntID() == id.Server && child.Type() != ua.NodeIDTypeString {
			continue
		}
		name := ""
		if r.BrowseName != nil {
			name = r.BrowseName.Name
		}
		if name == "" && r.DisplayName != nil {
			name = r.DisplayName.Text
		}
		p := append(append([]string(nil), path...), name)
		if r.NodeClass == ua.NodeClassVariable && !b.listed[child.String()] {
			b.listed[child.String()] = true
			b.vars = append(b.vars, &browsedVar{id: child, path: p})
		}
		if err := b.walk(ctx, child, p, depth-1); err != nil {
			return err
		}
	}
	return nil
}

// readTypes reads every variable's DataType in batches and names it (Double, Int32, ...).
func (b *browser) readTypes(ctx context.Context, batch int) error {
	for start := 0; start < len(b.vars); start += batch {
		part := b.vars[start:min(start+batch, len(b.vars))]
		req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnNeither}
		for _, v := range part {
			req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: v.id, AttributeID: ua.AttributeIDDataType})
		}
		res, err := b.c.Read(ctx, req)
		if err != nil {
			return err
		}
		for i, dv := range res.Results {
			if i >= len(part) || dv == nil || dv.Value == nil {
				continue
			}
			if nid, ok := dv.Value.Value().(*ua.NodeID); ok {
				part[i].dtype = typeName(nid)
			}
		}
	}
	return nil
}

func typeName(n *ua.NodeID) string {
	if n.Namespace() == 0 {
		if s := id.Name(n.IntID()); s != "" {
			return s
		}
	}
	return strings.NewReplacer(";", "_", "=", "_").Replace(n.String())
}

// signalName makes a signal name from a browse path: lower case, [a-z0-9_] words joined by dots.
func signalName(path []string) string {
	parts := make([]string, 0, len(path))
	for _, p := range path {
		var b strings.Builder
		for _, r := range strings.ToLower(p) {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
				b.WriteRune(r)
			default:
				if b.Len() > 0 && !strings.HasSuffix(b.String(), "_") {
					b.WriteByte('_')
				}
			}
		}
		if s := strings.Trim(b.String(), "_"); s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return "signal"
	}
	return strings.Join(parts, ".")
}
