package opcua

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/gopcua/opcua/ua"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/config"
)

// Probe connects the way the collector would and reports, for `gemba-agent probe`: the endpoint
// and security chosen, the server certificate's trust state, the server's operation limits, and
// whether every configured node exists and is readable. Everything wrong is returned as
// problems (a failed connection is one); err is only for failing to write the report.
func Probe(ctx context.Context, name string, cfg *Config, deps collectors.Deps, w io.Writer) (problems []string, err error) {
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := func(format string, args ...any) {
		if err == nil {
			_, err = fmt.Fprintf(w, format+"\n", args...)
		}
	}
	p("collector %s (opcua) %s", name, cfg.Endpoint)
	s, cerr := connect(ctx, connectOptions{cfg: cfg, dataDir: deps.DataDir, agent: deps.Agent, logger: logger})
	if cerr != nil {
		msg := fmt.Sprintf("%s: connect %s: %v", name, cfg.Endpoint, cerr)
		p("  FAIL %s", msg)
		return []string{msg}, err
	}
	defer s.close()
	p("  security: %s/%s (configured %s/%s)", policyName(s.endpoint.SecurityPolicyURI), modeName(s.endpoint.SecurityMode),
		cfg.Security.Policy, cfg.Security.Mode)
	if s.endpoint.SecurityMode == ua.MessageSecurityModeNone {
		p("  server certificate: %s", s.trust)
	} else {
		p("  server certificate: thumbprint %s, %s", thumbprint(s.endpoint.ServerCertificate), s.trust)
	}
	lim := s.limits
	p("  operation limits: MaxNodesPerRead=%s MaxMonitoredItemsPerCall=%s MaxNodesPerBrowse=%s (batches: read %d, monitor %d)",
		limitText(lim.MaxNodesPerRead), limitText(lim.MaxMonitoredItemsPerCall), limitText(lim.MaxNodesPerBrowse),
		batchSize(lim.MaxNodesPerRead, cfg.BatchSize), batchSize(lim.MaxMonitoredItemsPerCall, cfg.BatchSize))

	type probeNode struct {
		path string
		n    Node
		id   *ua.NodeID
	}
	var nodes []probeNode
	add := func(prefix string, list []Node) {
		for i, n := range list {
			nodes = append(nodes, probeNode{path: prefix + "nodes" + config.Index(i), n: n})
		}
	}
	add("", cfg.Nodes)
	for gi, g := range cfg.Groups {
		add("groups"+config.Index(gi)+".", g.Nodes)
	}
	var readable []probeNode
	for _, pn := range nodes {
		ref, perr := parseNodeRef(pn.n.Node)
		if perr == nil {
			pn.id, perr = ref.resolve(s.namespaces)
		}
		if perr != nil {
			problems = append(problems, fmt.Sprintf("%s: %s (signal %s): %v", name, pn.path, pn.n.Signal, perr))
			continue
		}
		readable = append(readable, pn)
	}
	batch := batchSize(lim.MaxNodesPerRead, cfg.BatchSize) / 2 // two attributes per node
	batch = max(batch, 1)
	for start := 0; start < len(readable); start += batch {
		part := readable[start:min(start+batch, len(readable))]
		req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnNeither}
		for _, pn := range part {
			req.NodesToRead = append(req.NodesToRead,
				&ua.ReadValueID{NodeID: pn.id, AttributeID: ua.AttributeIDValue},
				&ua.ReadValueID{NodeID: pn.id, AttributeID: ua.AttributeIDUserAccessLevel})
		}
		res, rerr := s.client.Read(ctx, req)
		if rerr != nil || len(res.Results) != 2*len(part) {
			msg := fmt.Sprintf("%s: read nodes: %v", name, rerr)
			p("  FAIL %s", msg)
			return append(problems, msg), err
		}
		for i, pn := range part {
			val, acc := res.Results[2*i], res.Results[2*i+1]
			switch {
			case val != nil && isQuarantineCode(val.Status):
				problems = append(problems, fmt.Sprintf("%s: %s %s (signal %s): %s", name, pn.path, pn.n.Node, pn.n.Signal, statusName(val.Status)))
			case acc != nil && acc.Status == ua.StatusOK && acc.Value != nil && !readBit(acc.Value.Value()):
				problems = append(problems, fmt.Sprintf("%s: %s %s (signal %s): not readable by this user (UserAccessLevel)", name, pn.path, pn.n.Node, pn.n.Signal))
			}
		}
	}
	p("  nodes: %d configured, %d ok, %d with problems", len(nodes), len(nodes)-len(problems), len(problems))
	for _, pr := range problems {
		p("  FAIL %s", pr)
	}
	return problems, err
}

func readBit(v any) bool {
	if b, ok := v.(uint8); ok {
		return b&uint8(ua.AccessLevelTypeCurrentRead) != 0
	}
	return true // unknown encoding: let the value read decide
}

func limitText(v uint32) string {
	if v == 0 {
		return "unset"
	}
	return fmt.Sprint(v)
}
