package mqtt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

type testPKI struct {
	caFile, certFile, keyFile string
	server                    tls.Certificate
	pool                      *x509.CertPool
}

// newPKI makes a CA, a server certificate for broker.test and a client certificate.
func newPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, dns []string) (certPEM, keyPEM []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	}
	p := testPKI{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "client.pem"), keyFile: filepath.Join(dir, "client.key")}
	write := func(path string, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	cc, ck := issue(2, "gemba-agent", x509.ExtKeyUsageClientAuth, nil)
	write(p.certFile, cc)
	write(p.keyFile, ck)
	sc, sk := issue(3, "broker", x509.ExtKeyUsageServerAuth, []string{"broker.test"})
	if p.server, err = tls.X509KeyPair(sc, sk); err != nil {
		t.Fatal(err)
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	return p
}

// startTLSMochi serves a mochi broker on a listener made by listen, with the PKI's server
// certificate and client certificates required.
func startTLSMochi(t *testing.T, pki testPKI, listen func(listeners.Config) listeners.Listener) (*mochi.Server, int) {
	t.Helper()
	port := testutil.FreePort(t)
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	if err := srv.AddListener(listen(listeners.Config{ID: "tls", Address: fmt.Sprintf("127.0.0.1:%d", port), TLSConfig: tlsCfg})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv, port
}

// TestTLSClientCertificate: ssl:// and wss:// to a broker that requires a client certificate, with
// the CA and server name from the config (the broker is dialled by IP, its certificate names
// broker.test), through the collector's own dialer.
func TestTLSClientCertificate(t *testing.T) {
	pki := newPKI(t)
	for _, tc := range []struct {
		scheme, path string
		listen       func(listeners.Config) listeners.Listener
	}{
		{"ssl", "", func(c listeners.Config) listeners.Listener { return listeners.NewTCP(c) }},
		{"wss", "/mqtt", func(c listeners.Config) listeners.Listener { return listeners.NewWebsocket(c) }},
	} {
		t.Run(tc.scheme, func(t *testing.T) {
			srv, port := startTLSMochi(t, pki, tc.listen)
			cfg := testConfig(fmt.Sprintf("%s://127.0.0.1:%d%s", tc.scheme, port, tc.path), Subscription{Topic: "secure/#", Format: FormatValue})
			cfg.TLS = TLSConfig{CAFile: pki.caFile, CertFile: pki.certFile, KeyFile: pki.keyFile, ServerName: "broker.test"}
			em := &memEmitter{}
			c := runCollector(t, cfg, collectors.Deps{Agent: "a"}, em)
			testutil.WaitFor(t, 10*time.Second, "connected over "+tc.scheme, connectedState(c))
			if err := srv.Publish("secure/x", []byte("5"), false, 1); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 5*time.Second, "sample over "+tc.scheme, func() bool { return em.count() == 1 })
			if got := em.all()[0]; got.Signal != "secure.x" || !got.Value.Equal(signal.Int(5)) {
				t.Fatalf("sample = %+v", got)
			}

			// The same broker under a name its certificate does not carry is refused, and said so.
			bad := *cfg
			bad.TLS.ServerName = "impostor.test"
			c2 := runCollector(t, &bad, collectors.Deps{Agent: "b"}, &memEmitter{})
			testutil.WaitFor(t, 10*time.Second, "certificate error reported", func() bool {
				st, info := c2.State()
				return st == "reconnecting" && strings.Contains(info["last_error"], "certificate")
			})
		})
	}
}

func TestTLSBadCAFileIsPermanent(t *testing.T) {
	cfg := testConfig("ssl://127.0.0.1:1", Subscription{Topic: "x", Format: FormatValue})
	cfg.TLS.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	_, err := New("test", cfg, collectors.Deps{Agent: "a"})
	if !collectors.IsPermanent(err) {
		t.Fatalf("New = %v, want a permanent error naming tls.ca_file", err)
	}
}

// TestFailoverToSecondBroker: the first broker of the list is down; the second one serves.
func TestFailoverToSecondBroker(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig("", Subscription{Topic: "f/#", Format: FormatValue, QoS: new(int)})
	cfg.Brokers = []string{fmt.Sprintf("tcp://127.0.0.1:%d", testutil.FreePort(t)), b.url()}
	*cfg.Subscriptions[0].QoS = 2
	em := &memEmitter{}
	c := runCollector(t, cfg, collectors.Deps{Agent: "a"}, em)
	testutil.WaitFor(t, 10*time.Second, "connected to the second broker", connectedState(c))
	pub := newPublisher(t, b.url(), "pub")
	publish(t, pub, "f/q2", 2, []byte("9"))
	testutil.WaitFor(t, 5*time.Second, "QoS 2 sample", func() bool { return em.count() == 1 })
	testutil.WaitFor(t, 5*time.Second, "QoS 2 flow completed", func() bool {
		cl, ok := b.srv.Clients.Get(c.clientID)
		return ok && cl.State.Inflight.Len() == 0
	})
}

// TestWebSocketBroker: ws:// brokers work like tcp:// ones.
func TestWebSocketBroker(t *testing.T) {
	port := testutil.FreePort(t)
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: fmt.Sprintf("127.0.0.1:%d", port)})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	cfg := testConfig(fmt.Sprintf("ws://127.0.0.1:%d/mqtt", port), Subscription{Topic: "w/#", Format: FormatValue})
	em := &memEmitter{}
	c := runCollector(t, cfg, collectors.Deps{Agent: "a"}, em)
	testutil.WaitFor(t, 10*time.Second, "connected over WebSocket", connectedState(c))
	if err := srv.Publish("w/1", []byte("on"), false, 1); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "sample over WebSocket", func() bool { return em.count() == 1 })
}
