package opcua

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // OPC UA thumbprints are SHA-1 by specification
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/gemba-io/gemba/internal/fsutil"
)

// ErrUntrustedServer is wrapped by errors about server certificates that are not trusted.
var ErrUntrustedServer = errors.New("server certificate is not trusted")

// clientCert is the loaded application instance certificate.
type clientCert struct {
	DER       []byte
	Key       *rsa.PrivateKey
	Generated bool   // created by us, kept under the data dir
	Path      string // where it lives
}

// loadClientCert returns the configured certificate, or the one generated on an earlier start,
// or generates and persists a new one. Persisting matters: a server operator trusts a client
// certificate once, and a new one after every restart would be rejected again.
func loadClientCert(c Certificate, dataDir, agent string) (*clientCert, error) {
	if c.CertFile != "" {
		return loadKeyPair(c.CertFile, c.KeyFile)
	}
	if dataDir == "" {
		return nil, errors.New("no certificate configured and no data directory to keep a generated one")
	}
	dir := filepath.Join(dataDir, "pki")
	certPath, keyPath := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	if _, err := os.Stat(certPath); err == nil {
		cc, err := loadKeyPair(certPath, keyPath)
		if err != nil {
			return nil, fmt.Errorf("generated certificate in %s (delete it to make a new one): %w", dir, err)
		}
		cc.Generated = true
		return cc, nil
	}
	appURI := c.ApplicationURI
	if appURI == "" {
		appURI = applicationURI(agent)
	}
	der, key, err := generateCert(appURI, agent)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	// key first: a crash between the two writes leaves no cert without key (the cert is what is
	// checked). Both are synced: an empty key after a power cut would fail every later start.
	if err := fsutil.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return &clientCert{DER: der, Key: key, Generated: true, Path: certPath}, nil
}

func applicationURI(agent string) string {
	if agent == "" {
		agent = "agent"
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return "urn:" + host + ":gemba:" + agent
}

func loadKeyPair(certFile, keyFile string) (*clientCert, error) {
	certData, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	keyData, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if !strings.Contains(string(certData), "-----BEGIN") { // DER certificate
		certData = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certData})
	}
	if !strings.Contains(string(keyData), "-----BEGIN") {
		keyData = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyData})
	}
	pair, err := tls.X509KeyPair(certData, keyData)
	if err != nil {
		return nil, fmt.Errorf("certificate %s / key %s: %w", certFile, keyFile, err)
	}
	key, ok := pair.PrivateKey.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key %s: OPC UA needs an RSA key", keyFile)
	}
	return &clientCert{DER: pair.Certificate[0], Key: key, Path: certFile}, nil
}

func generateCert(appURI, agent string) ([]byte, *rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	uri, err := url.Parse(appURI)
	if err != nil {
		return nil, nil, fmt.Errorf("application uri %q: %w", appURI, err)
	}
	host, _ := os.Hostname()
	dns := []string{"localhost"}
	if host != "" && host != "localhost" {
		dns = append(dns, host)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "gemba-agent " + agent, Organization: []string{"gemba"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
		DNSNames:              dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	return der, key, nil
}

// thumbprint is the hex SHA-1 of a DER certificate, the form OPC UA tools show.
func thumbprint(der []byte) string {
	sum := sha1.Sum(der) //nolint:gosec // see import
	return hex.EncodeToString(sum[:])
}

func normThumbprint(s string) (string, error) {
	t := strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(s))
	if len(t) != 40 {
		return "", fmt.Errorf("thumbprint %q: want 40 hex digits (SHA-1)", s)
	}
	if _, err := hex.DecodeString(t); err != nil {
		return "", fmt.Errorf("thumbprint %q: not hex", s)
	}
	return t, nil
}

// trustState says why a server certificate is (not) accepted.
type trustState string

const (
	trustNone       trustState = "not needed (security None)"
	trustPinned     trustState = "trusted (pinned thumbprint)"
	trustDir        trustState = "trusted (trust directory)"
	trustTOFU       trustState = "trusted (first use, stored)"
	trustKnownTOFU  trustState = "trusted (stored on first use)"
	trustUntrusted  trustState = "untrusted"
	tofuFileName               = "trusted-server.der"
	tofuDirName                = "pki"
	maxTrustDirSize            = 1 << 20
)

// checkTrust decides whether the server certificate der is trusted. It stores the certificate
// when trust_on_first_use is on and nothing was stored yet.
func checkTrust(t Trust, dataDir string, der []byte) (trustState, error) {
	tp := thumbprint(der)
	for _, p := range t.Thumbprints {
		if n, _ := normThumbprint(p); n == tp {
			return trustPinned, nil
		}
	}
	if t.Dir != "" {
		entries, err := os.ReadDir(t.Dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return trustUntrusted, fmt.Errorf("trust dir: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			if certFileMatches(filepath.Join(t.Dir, e.Name()), tp) {
				return trustDir, nil
			}
		}
	}
	tofuPath := ""
	if dataDir != "" {
		tofuPath = filepath.Join(dataDir, tofuDirName, tofuFileName)
	}
	if tofuPath != "" && certFileMatches(tofuPath, tp) {
		return trustKnownTOFU, nil
	}
	if t.TrustOnFirstUse && tofuPath != "" {
		if _, err := os.Stat(tofuPath); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(tofuPath), 0o700); err != nil {
				return trustUntrusted, err
			}
			if err := fsutil.WriteFileAtomic(tofuPath, der, 0o644); err != nil {
				return trustUntrusted, err
			}
			return trustTOFU, nil
		}
		// A different certificate than the one trusted on first use: the server was replaced, or
		// someone is in the middle. Refuse, like SSH does.
		return trustUntrusted, fmt.Errorf("%w: thumbprint %s differs from the one trusted on first use (%s); "+
			"if the server's certificate was renewed, delete that file or pin the new thumbprint under trust.thumbprints",
			ErrUntrustedServer, tp, tofuPath)
	}
	how := "add it under trust.thumbprints"
	if t.Dir != "" {
		how += fmt.Sprintf(", or copy the server certificate into %s", t.Dir)
	}
	return trustUntrusted, fmt.Errorf("%w: thumbprint %s (%s); %s, or set trust.trust_on_first_use: true",
		ErrUntrustedServer, tp, certSubject(der), how)
}

func certFileMatches(path, tp string) bool {
	st, err := os.Stat(path)
	if err != nil || st.Size() > maxTrustDirSize {
		return false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	if thumbprint(data) == tp {
		return true
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if b.Type == "CERTIFICATE" && thumbprint(b.Bytes) == tp {
			return true
		}
	}
}

func certSubject(der []byte) string {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "unparsable certificate"
	}
	return "subject " + c.Subject.String()
}

// selectEndpoint picks the endpoint matching the configured policy and mode. "auto" picks the
// strongest: highest policy strength, then SignAndEncrypt over Sign over None, then the server's
// SecurityLevel. With a username, endpoints that do not offer a username token are skipped.
func selectEndpoint(eps []*ua.EndpointDescription, sec Security, tok ua.UserTokenType) (*ua.EndpointDescription, error) {
	var cands []*ua.EndpointDescription
	for _, ep := range eps {
		if sec.Policy != "auto" && ep.SecurityPolicyURI != policyURI(sec.Policy) {
			continue
		}
		if sec.Mode != "auto" && ep.SecurityMode != securityModes[sec.Mode] {
			continue
		}
		if _, known := policyStrength[ep.SecurityPolicyURI]; !known {
			continue
		}
		if !offersToken(ep, tok) {
			continue
		}
		cands = append(cands, ep)
	}
	if len(cands) == 0 {
		var offered []string
		for _, ep := range eps {
			offered = append(offered, policyName(ep.SecurityPolicyURI)+"/"+modeName(ep.SecurityMode))
		}
		return nil, fmt.Errorf("no endpoint matches security %s/%s with %s login (server offers: %s)",
			sec.Policy, sec.Mode, tokenName(tok), strings.Join(offered, ", "))
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if sa, sb := policyStrength[a.SecurityPolicyURI], policyStrength[b.SecurityPolicyURI]; sa != sb {
			return sa > sb
		}
		if a.SecurityMode != b.SecurityMode {
			return a.SecurityMode > b.SecurityMode
		}
		return a.SecurityLevel > b.SecurityLevel
	})
	return cands[0], nil
}

func offersToken(ep *ua.EndpointDescription, tok ua.UserTokenType) bool {
	if len(ep.UserIdentityTokens) == 0 {
		return tok == ua.UserTokenTypeAnonymous
	}
	for _, t := range ep.UserIdentityTokens {
		if t.TokenType == tok {
			return true
		}
	}
	return false
}

func tokenName(t ua.UserTokenType) string {
	switch t {
	case ua.UserTokenTypeUserName:
		return "username"
	case ua.UserTokenTypeCertificate:
		return "certificate"
	}
	return "anonymous"
}
