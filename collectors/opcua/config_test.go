package opcua

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/testutil"
)

func TestConfigErrorsNamePathAndLine(t *testing.T) {
	cases := []struct {
		name, yml string
		want      []string
	}{
		{"no endpoint", "nodes: [{node: ns=1;s=A, signal: a}]", []string{"endpoint: required"}},
		{"bad scheme", "endpoint: http://x\nnodes: [{node: ns=1;s=A, signal: a}]", []string{"endpoint: must start with opc.tcp://"}},
		{"no nodes", "endpoint: opc.tcp://h:4840", []string{"nodes: no nodes configured"}},
		{"bad policy", "endpoint: opc.tcp://h:4840\nsecurity: {policy: Basic999}\nnodes: [{node: ns=1;s=A, signal: a}]",
			[]string{"line 2: security.policy: unknown policy \"Basic999\""}},
		{"bad mode", "endpoint: opc.tcp://h:4840\nsecurity: {mode: Encrypt}\nnodes: [{node: ns=1;s=A, signal: a}]",
			[]string{"security.mode: unknown mode"}},
		{"node id", "endpoint: opc.tcp://h:4840\nnodes:\n  - {node: \"ns=x;s=A\", signal: a}\n  - {node: \"nsu=;s=B\", signal: b}\n  - {node: \"ns=1;q=C\", signal: c}",
			[]string{"line 3: nodes[0].node:", "line 4: nodes[1].node: node id \"nsu=;s=B\": empty namespace URI", "nodes[2].node: node id \"ns=1;q=C\": identifier must be"}},
		{"duplicate signal", "endpoint: opc.tcp://h:4840\nnodes:\n  - {node: ns=1;s=A, signal: a}\n  - {node: ns=1;s=B, signal: a}",
			[]string{"nodes[1].signal: signal \"a\" is already used by nodes[0]"}},
		{"duplicate node", "endpoint: opc.tcp://h:4840\nnodes:\n  - {node: ns=1;s=A, signal: a}\n  - {node: ns=1;s=B, signal: b}\n  - {node: ns=1;s=A, signal: c}",
			[]string{"line 5: nodes[2].node: node ns=1;s=A is listed twice: also at line 3 (nodes[0])"}},
		{"duplicate node across groups and spellings", "endpoint: opc.tcp://h:4840\nnodes:\n  - {node: i=2258, signal: a}\ngroups:\n  - name: g\n    nodes:\n      - {node: ns=0;i=2258, signal: b}\n      - {node: \"nsu=urn:x;s=A\", signal: c}\n      - {node: \"nsu=urn:x;s=A\", signal: d}",
			[]string{"line 7: groups[0].nodes[0].node: node ns=0;i=2258 is listed twice: also at line 3 (nodes[0])",
				"line 9: groups[0].nodes[2].node: node nsu=urn:x;s=A is listed twice: also at line 8 (groups[0].nodes[1])"}},
		{"missing signal", "endpoint: opc.tcp://h:4840\nnodes: [{node: ns=1;s=A}]", []string{"nodes[0].signal: required"}},
		{"unknown key", "endpoint: opc.tcp://h:4840\nnodes: [{node: ns=1;s=A, signal: a, sampeling: 1s}]", []string{"nodes[0].sampeling: unknown field", "did you mean \"sampling\""}},
		{"deadband", "endpoint: opc.tcp://h:4840\nnodes:\n  - {node: ns=1;s=A, signal: a, deadband: -1}\n  - {node: ns=1;s=B, signal: b, deadband: {type: relative, value: 1}}\n  - {node: ns=1;s=C, signal: c, deadband: {type: percent, value: 101}}",
			[]string{"nodes[0].deadband: expected a non-negative number", "nodes[1].deadband.type: unknown deadband type \"relative\"", "nodes[2].deadband.value: deadband 101 out of range"}},
		{"group", "endpoint: opc.tcp://h:4840\ngroups:\n  - {name: g, mode: stream, nodes: [{node: ns=1;s=A, signal: a}]}\n  - {name: g, nodes: []}",
			[]string{"groups[0].mode: unknown mode \"stream\"", "groups[1].name: duplicate group name", "groups[1].nodes: a group needs nodes"}},
		{"deadband not finite", "endpoint: opc.tcp://h:4840\nnodes:\n  - {node: ns=1;s=A, signal: a, deadband: nan}\n  - {node: ns=1;s=B, signal: b, deadband: inf}",
			[]string{"nodes[0].deadband: expected a non-negative number", "nodes[1].deadband: expected a non-negative number"}},
		{"percent in poll", "endpoint: opc.tcp://h:4840\nmode: poll\nnodes: [{node: ns=1;s=A, signal: a, deadband: {type: percent, value: 5}}]", []string{"nodes[0].deadband: a percent deadband needs subscribe mode"}},
		{"trigger", "endpoint: opc.tcp://h:4840\nnodes: [{node: ns=1;s=A, signal: a, trigger: always}]", []string{"nodes[0].trigger: unknown trigger \"always\""}},
		{"duration", "endpoint: opc.tcp://h:4840\npublishing_interval: fast\nnodes: [{node: ns=1;s=A, signal: a}]", []string{"publishing_interval: invalid duration \"fast\""}},
		{"auth", "endpoint: opc.tcp://h:4840\nauth: {password: x}\ncertificate: {cert_file: a.pem}\nnodes: [{node: ns=1;s=A, signal: a}]",
			[]string{"auth.username: required when a password is set", "certificate: cert_file and key_file go together"}},
		{"thumbprint", "endpoint: opc.tcp://h:4840\ntrust: {thumbprints: [abc]}\nnodes: [{node: ns=1;s=A, signal: a}]", []string{"trust.thumbprints[0]: thumbprint \"abc\": want 40 hex digits"}},
		{"secret env", "endpoint: opc.tcp://h:4840\nauth: {username: u, password: \"${GEMBA_UNSET_PW_FOR_TEST}\"}\nnodes: [{node: ns=1;s=A, signal: a}]", []string{"auth.password: ${GEMBA_UNSET_PW_FOR_TEST}"}},
		{"reconnect", "endpoint: opc.tcp://h:4840\nreconnect: {min_backoff: 5s, max_backoff: 1s}\nnodes: [{node: ns=1;s=A, signal: a}]", []string{"reconnect: need 0 < min_backoff <= max_backoff"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := config.NewDecoder().Unmarshal([]byte(tc.yml), NewConfig())
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigInheritance(t *testing.T) {
	cfg := decodeConfig(t, `endpoint: opc.tcp://h:4840
sampling: 250ms
queue_size: 5
discard_oldest: false
max_array: 8
nodes:
  - {node: "ns=2;i=7", signal: a, deadband: 0.5}
groups:
  - name: fast
    mode: subscribe
    publishing_interval: 100ms
    queue_size: 20
    nodes:
      - {node: "nsu=urn:x;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63", signal: b, sampling: 10ms, trigger: status_value_timestamp, discard_oldest: true}
      - {node: "ns=3;b=YWJj", signal: c, deadband: {type: percent, value: 2}, max_array: 2}
`)
	gs := cfg.groups()
	if len(gs) != 2 || gs[0].Name != "default" || gs[0].Mode != ModeSubscribe || gs[1].PublishingInterval != 100*time.Millisecond || gs[0].PublishingInterval != time.Second {
		t.Fatalf("groups = %+v", gs)
	}
	a, b, c := gs[0].Nodes[0], gs[1].Nodes[0], gs[1].Nodes[1]
	if a.Sampling != 250*time.Millisecond || a.QueueSize != 5 || a.DiscardOldest || a.MaxArray != 8 || a.Deadband != (Deadband{"absolute", 0.5}) {
		t.Errorf("a = %+v", a)
	}
	if b.Sampling != 10*time.Millisecond || b.QueueSize != 20 || !b.DiscardOldest || b.Trigger != ua.DataChangeTriggerStatusValueTimestamp || b.Ref.NSU != "urn:x" {
		t.Errorf("b = %+v", b)
	}
	if c.Deadband != (Deadband{"percent", 2}) || c.MaxArray != 2 || c.Trigger != ua.DataChangeTriggerStatusValue {
		t.Errorf("c = %+v", c)
	}
	// the nsu id resolves against whatever index the server gives the URI
	id, err := b.Ref.resolve([]string{"http://opcfoundation.org/UA/", "urn:other", "urn:x"})
	if err != nil || id.Namespace() != 2 || id.Type() != ua.NodeIDTypeGUID {
		t.Errorf("resolve = %v %v", id, err)
	}
	if _, err := b.Ref.resolve([]string{"http://opcfoundation.org/UA/"}); err == nil {
		t.Errorf("resolving an unknown namespace URI should fail")
	}
	// sampling: unset means the publishing interval (-1 on the wire), 0 means as fast as possible
	sc := decodeConfig(t, "endpoint: opc.tcp://h:4840\nnodes:\n  - {node: ns=1;s=A, signal: a}\n  - {node: ns=1;s=B, signal: b, sampling: 0s}")
	if sg := sc.groups()[0].Nodes; sg[0].Sampling != -1 || sg[1].Sampling != 0 {
		t.Errorf("sampling unset/0 = %v/%v, want -1/0", sg[0].Sampling, sg[1].Sampling)
	}
	num, _ := parseNodeRef("nsu=urn:x;i=70000")
	if id, err := num.resolve([]string{"a", "b", "c", "urn:x"}); err != nil || id.Namespace() != 3 || id.IntID() != 70000 {
		t.Errorf("numeric resolve = %v %v", id, err)
	}
}

func TestRegisteredFactory(t *testing.T) {
	f, ok := collectors.Lookup("opcua")
	if !ok {
		t.Fatal("opcua not registered")
	}
	if _, ok := f.NewConfig().(*Config); !ok {
		t.Fatal("NewConfig does not return *Config")
	}
	if _, err := f.New("x", struct{}{}, collectors.Deps{}); err == nil {
		t.Fatal("wrong config type accepted")
	}
	cfg := decodeConfig(t, "endpoint: opc.tcp://127.0.0.1:1\nnodes: [{node: ns=1;s=A, signal: a}]")
	c, err := f.New("x", cfg, collectors.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(collectors.Stater); !ok {
		t.Fatal("collector does not implement Stater")
	}
}

func TestRunStopsPromptlyWhileServerIsDown(t *testing.T) {
	cfg := decodeConfig(t, "endpoint: opc.tcp://127.0.0.1:1\nnodes: [{node: ns=1;s=A, signal: a}]\nreconnect: {min_backoff: 10ms, max_backoff: 20ms}")
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 20*time.Second, "reconnecting", func() bool {
		st, d := r.c.State()
		return st == "reconnecting" && strings.Contains(d["last_error"], "connection refused")
	})
	r.stop(t) // checks Run returns nil within the deadline
	if st, _ := r.c.State(); st != "stopped" {
		t.Errorf("state after stop = %s", st)
	}
}

func TestGeneratedCertificateIsPersistedWithURI(t *testing.T) {
	dir := t.TempDir()
	c1, err := loadClientCert(Certificate{}, dir, "gw1")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := loadClientCert(Certificate{}, dir, "gw1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c1.DER, c2.DER) || !c2.Generated {
		t.Fatal("second start generated a new certificate")
	}
	cert, err := x509.ParseCertificate(c1.DER)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || !strings.HasSuffix(cert.URIs[0].String(), ":gemba:gw1") {
		t.Errorf("SAN URIs = %v", cert.URIs)
	}
	if st, _ := os.Stat(filepath.Join(dir, "pki", "client.key")); st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v", st)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "pki")); len(entries) != 2 {
		t.Errorf("pki holds %v, want client.crt and client.key only", entries)
	}
	// a configured pair is used as is; a broken one is an error naming the files
	certPEM, _ := os.ReadFile(filepath.Join(dir, "pki", "client.crt"))
	if err := os.WriteFile(filepath.Join(dir, "bad.key"), []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = loadClientCert(Certificate{CertFile: filepath.Join(dir, "pki", "client.crt"), KeyFile: filepath.Join(dir, "bad.key")}, dir, "gw1")
	mustContain(t, err, "bad.key")
	if b, _ := pem.Decode(certPEM); b == nil {
		t.Fatal("persisted certificate is not PEM")
	}
	// a corrupt persisted certificate is reported with the directory to clean, not replaced silently
	if err := os.WriteFile(filepath.Join(dir, "pki", "client.crt"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = loadClientCert(Certificate{}, dir, "gw1")
	mustContain(t, err, "delete it to make a new one")
}

func TestTrustDecisions(t *testing.T) {
	der, _, err := generateCert("urn:server", "srv")
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := generateCert("urn:other", "srv")
	tp := thumbprint(der)
	dataDir, tdir := t.TempDir(), t.TempDir()
	if _, err := checkTrust(Trust{}, dataDir, der); err == nil {
		t.Fatal("unknown server certificate accepted")
	}
	if st, err := checkTrust(Trust{Thumbprints: []string{strings.ToUpper(tp)}}, dataDir, der); err != nil || st != trustPinned {
		t.Errorf("pinned: %v %v", st, err)
	}
	if err := os.WriteFile(filepath.Join(tdir, "srv.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, err := checkTrust(Trust{Dir: tdir}, dataDir, der); err != nil || st != trustDir {
		t.Errorf("trust dir: %v %v", st, err)
	}
	_, err = checkTrust(Trust{Dir: tdir}, dataDir, other)
	mustContain(t, err, thumbprint(other), "copy the server certificate into "+tdir)
	if st, err := checkTrust(Trust{TrustOnFirstUse: true}, dataDir, der); err != nil || st != trustTOFU {
		t.Errorf("first use: %v %v", st, err)
	}
	if st, err := checkTrust(Trust{TrustOnFirstUse: true}, dataDir, der); err != nil || st != trustKnownTOFU {
		t.Errorf("second use: %v %v", st, err)
	}
	// a different certificate after first use is refused, like SSH
	_, err = checkTrust(Trust{TrustOnFirstUse: true}, dataDir, other)
	mustContain(t, err, "differs from the one trusted on first use")
}

func TestSelectEndpoint(t *testing.T) {
	ep := func(policy string, mode ua.MessageSecurityMode, toks ...ua.UserTokenType) *ua.EndpointDescription {
		e := &ua.EndpointDescription{SecurityPolicyURI: policies[policy], SecurityMode: mode}
		for _, tk := range toks {
			e.UserIdentityTokens = append(e.UserIdentityTokens, &ua.UserTokenPolicy{TokenType: tk})
		}
		return e
	}
	anon, user := ua.UserTokenTypeAnonymous, ua.UserTokenTypeUserName
	eps := []*ua.EndpointDescription{
		ep("None", ua.MessageSecurityModeNone, anon),
		ep("Basic256", ua.MessageSecurityModeSignAndEncrypt, anon, user),
		ep("Basic256Sha256", ua.MessageSecurityModeSign, anon, user),
		ep("Basic256Sha256", ua.MessageSecurityModeSignAndEncrypt, anon, user),
		ep("Basic128Rsa15", ua.MessageSecurityModeSignAndEncrypt, anon),
	}
	got, err := selectEndpoint(eps, Security{Policy: "auto", Mode: "auto"}, anon)
	if err != nil || policyName(got.SecurityPolicyURI) != "Basic256Sha256" || got.SecurityMode != ua.MessageSecurityModeSignAndEncrypt {
		t.Errorf("auto picked %v %v", got, err)
	}
	got, _ = selectEndpoint(eps, Security{Policy: "auto", Mode: "Sign"}, user)
	if policyName(got.SecurityPolicyURI) != "Basic256Sha256" || got.SecurityMode != ua.MessageSecurityModeSign {
		t.Errorf("auto/Sign picked %v", got)
	}
	got, _ = selectEndpoint(eps, Security{Policy: "None", Mode: "None"}, anon)
	if got.SecurityMode != ua.MessageSecurityModeNone {
		t.Errorf("None picked %v", got)
	}
	_, err = selectEndpoint(eps, Security{Policy: "Aes256_Sha256_RsaPss", Mode: "auto"}, anon)
	mustContain(t, err, "no endpoint matches security Aes256_Sha256_RsaPss/auto", "server offers: None/None, Basic256/SignAndEncrypt")
	_, err = selectEndpoint(eps, Security{Policy: "None", Mode: "auto"}, user)
	mustContain(t, err, "with username login")
}

func TestBrowseGoServerOutputDecodesAndProbes(t *testing.T) {
	g := sharedGoServer(t)
	g.add("browse.Temperature", 21.5)
	g.add("browse.Part Count", int32(3))
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root := "ns=1;i=85" // the namespace's own Objects folder
	err := Browse(ctx, BrowseOptions{Endpoint: g.url, Root: root, Depth: 2, Security: Security{Policy: "None", Mode: "None"}}, &out)
	if err != nil {
		t.Fatal(err)
	}
	yml := out.String()
	for _, want := range []string{`node: "nsu=urn:gemba:gotest;s=browse.Temperature", signal: browse_temperature`, `signal: browse_part_count`} {
		if !strings.Contains(yml, want) {
			t.Errorf("browse output lacks %q:\n%s", want, yml)
		}
	}
	cfg := decodeConfig(t, "endpoint: "+g.url+"\nsecurity: {policy: None, mode: None}\n"+yml)
	var rep bytes.Buffer
	problems, err := Probe(ctx, "plc", cfg, collectors.Deps{}, &rep)
	if err != nil || len(problems) != 0 {
		t.Fatalf("probe: %v %v\n%s", problems, err, rep.String())
	}
	if !strings.Contains(rep.String(), "security: None/None") || !strings.Contains(rep.String(), "MaxNodesPerRead=") {
		t.Errorf("probe report:\n%s", rep.String())
	}
}

func TestProbeReportsConnectFailure(t *testing.T) {
	cfg := decodeConfig(t, "endpoint: opc.tcp://127.0.0.1:1\nnodes: [{node: ns=1;s=A, signal: a}]\ntimeouts: {connect: 2s}")
	var rep bytes.Buffer
	problems, err := Probe(context.Background(), "plc", cfg, collectors.Deps{}, &rep)
	if err != nil || len(problems) != 1 || !strings.Contains(problems[0], "plc: connect opc.tcp://127.0.0.1:1") {
		t.Errorf("problems %q err %v", problems, err)
	}
}

func TestSignalNames(t *testing.T) {
	for in, want := range map[string]string{"Line 1/Press|Temp °C": "line_1_press_temp_c", "": "signal", "__A__": "a"} {
		if got := signalName([]string{in}); got != want {
			t.Errorf("signalName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := signalName([]string{"Gemba", "Bulk", "v1"}); got != "gemba.bulk.v1" {
		t.Errorf("path = %q", got)
	}
}

func TestStatusNames(t *testing.T) {
	for code, want := range map[ua.StatusCode]string{
		ua.StatusBadNodeIDUnknown:          "BadNodeIdUnknown",
		ua.StatusBadSensorFailure | 0x0400: "BadSensorFailure", // info bits ignored
		ua.StatusUncertainLastUsableValue:  "UncertainLastUsableValue",
		ua.StatusCode(0x80EE0000):          "0x80EE0000",
		ua.StatusCode(0x80EE0400):          "0x80EE0400", // unknown: shown whole
	} {
		if got := statusName(code); got != want {
			t.Errorf("statusName(%#x) = %q, want %q", uint32(code), got, want)
		}
	}
	// every Bad or Uncertain sample carries its name: naming a known code must not allocate
	if n := testing.AllocsPerRun(100, func() { statusName(ua.StatusBadNodeIDUnknown) }); n != 0 {
		t.Errorf("statusName allocates %v times per call", n)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := NewConfig()
	env := func(k string) (string, bool) { return "pw", k == "OPCUA_PASSWORD" }
	if err := config.NewDecoder(config.WithEnv(env)).Unmarshal(data, cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.Password.Value() != "pw" || len(cfg.groups()) != 2 || cfg.groups()[1].Mode != ModePoll {
		t.Errorf("example decoded to %+v", cfg)
	}
}
