package server_test

import (
	"context"
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
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sluice-rl/sluice/server"
)

// testCA issues certificates for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key for a server (127.0.0.1) or client.
func (ca *testCA) issue(t *testing.T, serial int64, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func TestMutualTLS(t *testing.T) {
	ca := newCA(t)
	write := tempWriter(t)
	sc, sk := ca.issue(t, 2, true)
	cc, ck := ca.issue(t, 3, false)
	h := start(t, edgeDomains(), false, withConfig(func(c *server.Config) {
		c.GRPC.TLS = server.TLSConfig{CertFile: write("s.pem", sc), KeyFile: write("s.key", sk), ClientCAFile: write("ca.pem", ca.pem)}
	}))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.pem)
	clientCert, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(certs []tls.Certificate) error {
		conn, err := grpc.NewClient(h.srv.GRPCAddr().String(), grpc.WithTransportCredentials(
			credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs})))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx, req("edge", desc(kv{"user", "tls"})))
		return err
	}
	if err := dial([]tls.Certificate{clientCert}); err != nil {
		t.Errorf("with a client certificate: %v", err)
	}
	if err := dial(nil); err == nil {
		t.Errorf("without a client certificate: accepted")
	}
	// Plaintext is refused.
	if _, err := h.call(req("edge", desc(kv{"user", "plain"}))); err == nil {
		t.Errorf("plaintext call accepted by a TLS server")
	}
}

func TestTLSConfigErrors(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.GRPC.TLS = server.TLSConfig{CertFile: "/nonexistent.pem", KeyFile: "/nonexistent.key"}
	if _, err := server.New(cfg, nil, server.Options{}); err == nil {
		t.Error("New accepted unreadable TLS files")
	}
	cfg.GRPC.TLS = server.TLSConfig{CertFile: "a.pem"}
	if _, err := server.New(cfg, nil, server.Options{}); err == nil {
		t.Error("New accepted a certificate without a key")
	}
}

// tempWriter returns a function that writes a file into a directory of
// t's own and returns its path.
func tempWriter(t *testing.T) func(name string, data []byte) string {
	t.Helper()
	dir := t.TempDir()
	return func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
}
