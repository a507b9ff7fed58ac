package opcua

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// session is one connected client: secure channel, session and the facts read at connect time.
type session struct {
	client     *opcua.Client
	endpoint   *ua.EndpointDescription
	trust      trustState
	namespaces []string
	limits     opLimits
	// lost receives the library's Disconnected/Closed transitions.
	lost chan struct{}
}

// opLimits are the server's OperationLimits (0 = not given).
type opLimits struct {
	MaxNodesPerRead          uint32
	MaxMonitoredItemsPerCall uint32
	MaxNodesPerBrowse        uint32
}

// defaultBatch is used when the server does not publish a limit: small enough for any server's
// default message size, large enough that 10,000 items take a handful of calls.
const defaultBatch = 1000

func batchSize(limit uint32, configured int) int {
	n := defaultBatch
	if configured > 0 {
		n = configured
	}
	if limit > 0 && int(limit) < n {
		n = int(limit)
	}
	return n
}

// authError marks failures a retry cannot fix (wrong password, rejected identity).
type authError struct{ err error }

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

var authCodes = []ua.StatusCode{
	ua.StatusBadUserAccessDenied, ua.StatusBadIdentityTokenInvalid, ua.StatusBadIdentityTokenRejected,
}

// connectOptions is what a connection needs besides the endpoint.
type connectOptions struct {
	cfg     *Config
	dataDir string
	agent   string
	logger  *slog.Logger
}

// connect discovers endpoints, picks one, checks the server certificate and opens a session.
func connect(ctx context.Context, o connectOptions) (*session, error) {
	cfg := o.cfg
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeouts.Connect)
	defer cancel()
	eps, err := opcua.GetEndpoints(dctx, cfg.Endpoint, opcua.DialTimeout(cfg.Timeouts.Connect))
	if err != nil {
		return nil, fmt.Errorf("get endpoints: %w", err)
	}
	tok := ua.UserTokenTypeAnonymous
	switch {
	case cfg.Auth.Username != "":
		tok = ua.UserTokenTypeUserName
	case cfg.Auth.CertFile != "":
		tok = ua.UserTokenTypeCertificate
	}
	ep, err := selectEndpoint(eps, cfg.Security, tok)
	if err != nil {
		return nil, &authError{err}
	}
	s := &session{endpoint: ep, trust: trustNone, lost: make(chan struct{}, 1)}
	opts := []opcua.Option{
		opcua.SecurityPolicy(ep.SecurityPolicyURI),
		opcua.SecurityMode(ep.SecurityMode),
		opcua.AutoReconnect(false), // we own the reconnect, see Collector.Run
		opcua.DialTimeout(cfg.Timeouts.Connect),
		opcua.RequestTimeout(cfg.Timeouts.Request),
		opcua.SessionTimeout(cfg.Timeouts.Session),
		opcua.ApplicationName("gemba-agent " + o.agent),
		opcua.ProductURI("urn:gemba:agent"),
		opcua.StateChangedFunc(func(st opcua.ConnState) {
			if st == opcua.Disconnected || st == opcua.Closed {
				select {
				case s.lost <- struct{}{}:
				default:
				}
			}
		}),
	}
	needCert := ep.SecurityMode != ua.MessageSecurityModeNone || tok == ua.UserTokenTypeCertificate
	var cc *clientCert
	if needCert {
		cc, err = loadClientCert(cfg.Certificate, o.dataDir, o.agent)
		if err != nil {
			return nil, &authError{fmt.Errorf("client certificate: %w", err)}
		}
		opts = append(opts, opcua.Certificate(cc.DER), opcua.PrivateKey(cc.Key))
		if cfg.Certificate.ApplicationURI != "" {
			opts = append(opts, opcua.ApplicationURI(cfg.Certificate.ApplicationURI))
		}
	}
	if ep.SecurityMode != ua.MessageSecurityModeNone {
		st, err := checkTrust(cfg.Trust, o.dataDir, ep.ServerCertificate)
		if err != nil {
			return nil, err
		}
		if st == trustTOFU {
			o.logger.Warn("server certificate trusted on first use", "thumbprint", thumbprint(ep.ServerCertificate))
		}
		s.trust = st
	}
	switch tok {
	case ua.UserTokenTypeUserName:
		opts = append(opts, opcua.AuthUsername(cfg.Auth.Username, cfg.Auth.Password.Value()))
	case ua.UserTokenTypeCertificate:
		uc, err := loadKeyPair(cfg.Auth.CertFile, cfg.Auth.KeyFile)
		if err != nil {
			return nil, &authError{fmt.Errorf("user certificate: %w", err)}
		}
		opts = append(opts, opcua.AuthCertificate(uc.DER), opcua.AuthPrivateKey(uc.Key))
	default:
		opts = append(opts, opcua.AuthAnonymous())
	}
	opts = append(opts, opcua.SecurityFromEndpoint(ep, tok))
	c, err := opcua.NewClient(cfg.Endpoint, opts...)
	if err != nil {
		return nil, &authError{fmt.Errorf("client options: %w", err)}
	}
	if err := c.Connect(dctx); err != nil {
		_ = c.Close(context.Background())
		for _, code := range authCodes {
			if errors.Is(err, code) {
				return nil, &authError{fmt.Errorf("connect: %w", err)}
			}
		}
		// Servers that do not trust our certificate answer BadSecurityChecksFailed, or (node-opcua)
		// just drop the connection while the secure channel opens.
		if cc != nil && (errors.Is(err, ua.StatusBadSecurityChecksFailed) || errors.Is(err, ua.StatusBadCertificateUntrusted) ||
			(ep.SecurityMode != ua.MessageSecurityModeNone && errors.Is(err, io.EOF))) {
			return nil, fmt.Errorf("connect: %w (the server probably does not trust this client's certificate: trust it on the server; "+
				"certificate %s, thumbprint %s)", err, cc.Path, thumbprint(cc.DER))
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	s.client = c
	s.namespaces = c.Namespaces()
	s.limits = readLimits(dctx, c)
	return s, nil
}

// close ends the session and the channel; it never blocks for long on a dead connection.
func (s *session) close() {
	if s == nil || s.client == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.client.Close(ctx)
}

// readLimits reads OperationLimits; a server without them gives zeros, and we use safe defaults.
func readLimits(ctx context.Context, c *opcua.Client) opLimits {
	ids := []uint32{
		id.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
		id.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
		id.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
	}
	req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnNeither}
	for _, n := range ids {
		req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ua.NewNumericNodeID(0, n), AttributeID: ua.AttributeIDValue})
	}
	res, err := c.Read(ctx, req)
	var out opLimits
	if err != nil || len(res.Results) != len(ids) {
		return out
	}
	get := func(i int) uint32 {
		dv := res.Results[i]
		if dv == nil || dv.Status != ua.StatusOK || dv.Value == nil {
			return 0
		}
		switch v := dv.Value.Value().(type) {
		case uint32:
			return v
		case uint16:
			return uint32(v)
		case int32:
			if v > 0 {
				return uint32(v)
			}
		}
		return 0
	}
	out.MaxNodesPerRead, out.MaxMonitoredItemsPerCall, out.MaxNodesPerBrowse = get(0), get(1), get(2)
	return out
}

// readBatched reads the Value attribute of ids in calls of at most batch nodes.
func readBatched(ctx context.Context, c *opcua.Client, ids []*ua.NodeID, batch int) ([]*ua.DataValue, error) {
	out := make([]*ua.DataValue, 0, len(ids))
	for start := 0; start < len(ids); start += batch {
		end := min(start+batch, len(ids))
		req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth}
		for _, n := range ids[start:end] {
			req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: n, AttributeID: ua.AttributeIDValue})
		}
		res, err := c.Read(ctx, req)
		if err != nil {
			return nil, err
		}
		if len(res.Results) != end-start {
			return nil, fmt.Errorf("read: server answered %d results for %d nodes", len(res.Results), end-start)
		}
		out = append(out, res.Results...)
	}
	return out, nil
}
