// Package xdstest is a real xDS control plane for tests: go-control-plane's
// server and snapshot cache (what Envoy Gateway serves its rate-limit
// service with), certificates for mutual TLS, and RateLimitConfig
// resources shaped like Envoy Gateway's.
package xdstest

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
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// ControlPlane is a running xDS server. Stop it with Stop (also done at
// the test's end).
type ControlPlane struct {
	Addr  string
	cache cachev3.SnapshotCache
	srv   *grpc.Server
	ln    net.Listener
	tls   *tls.Config

	mu       sync.Mutex
	nacks    []string // error_detail messages, in order
	acks     []string // version_info of each ACK
	nodes    []*corev3.Node
	stopOnce sync.Once
}

// Start runs a control plane on 127.0.0.1, with tlsCfg (nil: plain
// text); addr "" picks a free port.
func Start(t testing.TB, addr string, tlsCfg *tls.Config) *ControlPlane {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	cp := &ControlPlane{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), tls: tlsCfg}
	if err := cp.listen(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	return cp
}

func (cp *ControlPlane) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	cp.ln, cp.Addr = ln, ln.Addr().String()
	var opts []grpc.ServerOption
	if cp.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cp.tls)))
	}
	cp.srv = grpc.NewServer(opts...)
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		cp.nodes = append(cp.nodes, req.GetNode())
		switch {
		case req.GetErrorDetail() != nil:
			cp.nacks = append(cp.nacks, req.GetErrorDetail().GetMessage())
		case req.GetResponseNonce() != "":
			cp.acks = append(cp.acks, req.GetVersionInfo())
		}
		return nil
	}}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.srv, serverv3.NewServer(context.Background(), cp.cache, cb))
	srv := cp.srv
	go func() { _ = srv.Serve(ln) }() // ends with Stop
	cp.stopOnce = sync.Once{}
	return nil
}

// Stop ends the server and its streams.
func (cp *ControlPlane) Stop() {
	cp.stopOnce.Do(func() { cp.srv.Stop() })
}

// Restart serves again on the same address, with the same snapshots.
func (cp *ControlPlane) Restart() error { return cp.listen(cp.Addr) }

// Set serves resources to node as the snapshot version.
func (cp *ControlPlane) Set(t testing.TB, node, version string, configs ...*rlsconfv3.RateLimitConfig) {
	t.Helper()
	res := make([]types.Resource, len(configs))
	for i, c := range configs {
		res[i] = c
	}
	snap, err := cachev3.NewSnapshot(version, map[resource.Type][]types.Resource{resource.RateLimitConfigType: res})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
}

// NACKs are the error details of the NACKs received, in order.
func (cp *ControlPlane) NACKs() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.nacks...)
}

// ACKs are the versions ACKed, in order.
func (cp *ControlPlane) ACKs() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.acks...)
}

// LastNode is the node of the last request received; nil before one.
func (cp *ControlPlane) LastNode() *corev3.Node {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if len(cp.nodes) == 0 {
		return nil
	}
	return cp.nodes[len(cp.nodes)-1]
}

// Certs are PEM files for mutual TLS, all under one CA: Cert/Key carry
// 127.0.0.1 and localhost for both server and client use (Envoy Gateway
// gives its rate-limit service one certificate for both its gRPC port and
// its xDS stream); ServerCert/ServerKey are the control plane's.
type Certs struct {
	CA, Cert, Key, ServerCert, ServerKey string
	pool                                 *x509.CertPool
}

// WriteCerts writes a CA and two certificates into dir.
func WriteCerts(t testing.TB, dir string) *Certs {
	t.Helper()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "xdstest CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	c := &Certs{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key"),
		ServerCert: filepath.Join(dir, "cp.crt"), ServerKey: filepath.Join(dir, "cp.key"), pool: x509.NewCertPool()}
	c.pool.AddCert(caCert)
	writePEM(t, c.CA, "CERTIFICATE", caDER)
	leaf := func(serial int64, cn, certPath, keyPath string) {
		key := newKey(t)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			DNSNames: []string{"localhost", cn}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, certPath, "CERTIFICATE", der)
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, keyPath, "EC PRIVATE KEY", kder)
	}
	leaf(2, "envoy-ratelimit", c.Cert, c.Key)
	leaf(3, "envoy-gateway", c.ServerCert, c.ServerKey)
	return c
}

// ServerTLS is the control plane's side: its certificate, and client
// certificates required and verified against the CA.
func (c *Certs) ServerTLS(t testing.TB) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(c.ServerCert, c.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: c.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

// ClientTLS is a client of the rate-limit service: the client
// certificate, verifying the server against the CA.
func (c *Certs) ClientTLS(t testing.TB) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(c.ServerCert, c.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: c.pool, MinVersion: tls.VersionTLS12}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Units beyond the tagged proto module's enum (see package xds).
const (
	Month rlsconfv3.RateLimitUnit = 5
	Year  rlsconfv3.RateLimitUnit = 6
)

// Route is Envoy Gateway's route level: key and value are the route's
// name, with no limit of its own.
func Route(name string, children ...*rlsconfv3.RateLimitDescriptor) *rlsconfv3.RateLimitDescriptor {
	return &rlsconfv3.RateLimitDescriptor{Key: name, Value: name, Descriptors: children}
}

// Match is one match level (a header, a method: Envoy Gateway names them
// rule-N-match-M and gives key and value the same name), with a limit
// when rpu > 0 or further levels.
func Match(name string, rpu uint32, unit rlsconfv3.RateLimitUnit, children ...*rlsconfv3.RateLimitDescriptor) *rlsconfv3.RateLimitDescriptor {
	d := &rlsconfv3.RateLimitDescriptor{Key: name, Value: name, Descriptors: children}
	if rpu > 0 {
		d.RateLimit = &rlsconfv3.RateLimitPolicy{RequestsPerUnit: rpu, Unit: unit}
	}
	return d
}

// MaskedRemoteAddress is Envoy Gateway's CIDR level: the client address
// masked to cidr, one bucket per address when distinct ("" value).
func MaskedRemoteAddress(cidr string, rpu uint32, unit rlsconfv3.RateLimitUnit) *rlsconfv3.RateLimitDescriptor {
	return &rlsconfv3.RateLimitDescriptor{Key: "masked_remote_address", Value: cidr,
		RateLimit: &rlsconfv3.RateLimitPolicy{RequestsPerUnit: rpu, Unit: unit}}
}

// WithQuotaMode sets quota_mode and metadata on d as a newer proto would,
// in fields 7 and 8 (unknown to the tagged module's message).
func WithQuotaMode(t testing.TB, d *rlsconfv3.RateLimitDescriptor, quota bool, md map[string]any) *rlsconfv3.RateLimitDescriptor {
	t.Helper()
	var b []byte
	if quota {
		b = protowire.AppendTag(b, 7, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if md != nil {
		s, err := structpb.NewStruct(md)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := proto.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		b = protowire.AppendTag(b, 8, protowire.BytesType)
		b = protowire.AppendBytes(b, raw)
	}
	d.ProtoReflect().SetUnknown(append(d.ProtoReflect().GetUnknown(), b...))
	return d
}

// Config is one resource: one domain, named as Envoy Gateway names them
// (the listener's name is both).
func Config(domain string, ds ...*rlsconfv3.RateLimitDescriptor) *rlsconfv3.RateLimitConfig {
	return &rlsconfv3.RateLimitConfig{Name: domain, Domain: domain, Descriptors: ds}
}
