package uplink

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// deliverOne runs an uplink with cfg against a source holding one chunk and waits for its ack.
func deliverOne(t *testing.T, cfg Config) {
	t.Helper()
	src := newMemSource()
	src.Append(signal.StreamSamples, sampleChunk(0, 10, time.Now()))
	r := startUplink(t, cfg, src, Options{})
	testutil.WaitFor(t, 10*time.Second, "delivery", func() bool { return src.Acked(signal.StreamSamples) == 1 })
	if ok, why := r.u.Health().Ready(); !ok {
		t.Errorf("not ready: %s", why)
	}
}

// refused runs an uplink that must fail to connect, and returns its readiness reason.
func refused(t *testing.T, cfg Config, want string, secrets ...string) {
	t.Helper()
	r := startUplink(t, cfg, newMemSource(), Options{})
	testutil.WaitFor(t, 10*time.Second, "connect error", func() bool { return r.u.Health().LastError != "" })
	h := r.u.Health()
	ok, why := h.Ready()
	if ok || !strings.Contains(why, want) || !strings.Contains(h.LastError, want) {
		t.Errorf("ready=%v reason %q, last error %q; want %q", ok, why, h.LastError, want)
	}
	for _, s := range secrets {
		if strings.Contains(why, s) || strings.Contains(h.LastError, s) {
			t.Errorf("secret leaked in %q / %q", why, h.LastError)
		}
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuthUserPassword(t *testing.T) {
	o := natstest.Options(t)
	o.Username, o.Password = "agent", "correct-horse"
	s := natstest.Start(t, o)
	url := s.URL()

	cfg := testConfig(url)
	cfg.NATS.User, cfg.NATS.Password = "agent", config.NewSecret("correct-horse")
	deliverOne(t, cfg)

	cfg.NATS.Password = config.NewSecret("wrong-battery-staple")
	refused(t, cfg, "credentials refused", "wrong-battery-staple", "correct-horse")
}

func TestAuthNKey(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	o := natstest.Options(t)
	o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
	s := natstest.Start(t, o)

	cfg := testConfig(s.URL())
	cfg.NATS.NkeySeedFile = writeFile(t, "agent.nk", seed)
	deliverOne(t, cfg)

	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	cfg.NATS.NkeySeedFile = writeFile(t, "other.nk", otherSeed)
	refused(t, cfg, "credentials refused", string(otherSeed))
}

func TestAuthCredsJWT(t *testing.T) {
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	opClaims := jwt.NewOperatorClaims(opPub)
	if _, err := opClaims.Encode(op); err != nil {
		t.Fatal(err)
	}
	account := func(js bool) (nkeys.KeyPair, string, string) {
		kp, _ := nkeys.CreateAccount()
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		if js { // the system account must not have JetStream
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		tok, err := ac.Encode(op)
		if err != nil {
			t.Fatal(err)
		}
		return kp, pub, tok
	}
	_, sysPub, sysJWT := account(false)
	accKP, accPub, accJWT := account(true)
	resolver := &server.MemAccResolver{}
	for pub, tok := range map[string]string{sysPub: sysJWT, accPub: accJWT} {
		if err := resolver.Store(pub, tok); err != nil {
			t.Fatal(err)
		}
	}
	o := natstest.Options(t)
	o.TrustedOperators = []*jwt.OperatorClaims{opClaims}
	o.AccountResolver = resolver
	o.SystemAccount = sysPub
	s := natstest.Start(t, o)

	userCreds := func(signer nkeys.KeyPair) (string, []byte) {
		u, _ := nkeys.CreateUser()
		pub, _ := u.PublicKey()
		seed, _ := u.Seed()
		tok, err := jwt.NewUserClaims(pub).Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		creds, err := jwt.FormatUserConfig(tok, seed)
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, "agent.creds", creds), seed
	}
	cfg := testConfig(s.URL())
	cfg.NATS.CredsFile, _ = userCreds(accKP)
	deliverOne(t, cfg)

	// A user signed by an account the server does not know.
	stranger, _ := nkeys.CreateAccount()
	var seed []byte
	cfg.NATS.CredsFile, seed = userCreds(stranger)
	refused(t, cfg, "credentials refused", string(seed))
}

// pki is a CA with server and client certificates, generated per test.
type pki struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
	pool                                                 *x509.CertPool
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &pki{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	write := func(file, typ string, der []byte) string {
		f := filepath.Join(dir, file)
		if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	p.caFile = write("ca.pem", "CERTIFICATE", caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		return write(cn+".pem", "CERTIFICATE", der), write(cn+"-key.pem", "EC PRIVATE KEY", kb)
	}
	p.serverCert, p.serverKey = leaf(2, "server", x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth)
	return p
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t, "plant")
	cert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	o := natstest.Options(t)
	o.TLS, o.TLSVerify = true, true
	o.TLSTimeout = 2
	o.TLSConfig = &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientCAs: p.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	}
	s := natstest.Start(t, o)
	url := "tls://" + s.S.Addr().String()

	cfg := testConfig(url)
	cfg.NATS.TLS = TLSConfig{CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey, ServerName: "localhost"}
	deliverOne(t, cfg)

	// A client certificate from a CA the server does not trust.
	stranger := newPKI(t, "stranger")
	cfg.NATS.TLS = TLSConfig{CAFile: p.caFile, CertFile: stranger.clientCert, KeyFile: stranger.clientKey, ServerName: "localhost"}
	refused(t, cfg, "tls")

	// A server certificate the client does not trust.
	cfg.NATS.TLS = TLSConfig{CAFile: stranger.caFile, CertFile: p.clientCert, KeyFile: p.clientKey, ServerName: "localhost"}
	refused(t, cfg, "certificate signed by unknown authority")
}

func TestAuthToken(t *testing.T) {
	o := natstest.Options(t)
	o.Authorization = "s3cr3t-token"
	s := natstest.Start(t, o)

	cfg := testConfig(s.URL())
	cfg.NATS.Token = config.NewSecret("s3cr3t-token")
	deliverOne(t, cfg)

	cfg.NATS.Token = config.NewSecret("guessed-token")
	refused(t, cfg, "credentials refused by NATS: check the token", "guessed-token", "s3cr3t-token")
}
