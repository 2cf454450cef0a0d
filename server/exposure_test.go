package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sluice-rl/sluice/server"
)

// TestSilentConnectionsClosed opens connections that never send a byte:
// the server must close them after server.HandshakeTimeout, long before
// gRPC's own default of 120 s.
func TestSilentConnectionsClosed(t *testing.T) {
	h := start(t, edgeDomains(), false)
	for name, addr := range map[string]string{"grpc": h.srv.GRPCAddr().String(), "http": h.srv.HTTPAddr().String()} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// A bound with generous slack over the 5 s timeout; the old
			// behaviour held the connection for 120 s.
			_ = conn.SetReadDeadline(time.Now().Add(3 * server.HandshakeTimeout)) // a failure shows as the read's error
			buf := make([]byte, 512)
			for {
				_, err = conn.Read(buf) // the server may write its own preface first
				if err != nil {
					break
				}
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("a silent connection to %s is still open after %v", name, 3*server.HandshakeTimeout)
			}
		})
	}
}

// TestMaxConnectionsGRPC: with grpc.max_connections 2, a third client is
// not served until one of the first two closes.
func TestMaxConnectionsGRPC(t *testing.T) {
	h := start(t, edgeDomains(), false, withConfig(func(c *server.Config) { c.GRPC.MaxConnections = 2 }))
	addr := h.srv.GRPCAddr().String()
	check := func(conn *grpc.ClientConn, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	dial := func() *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// The harness's own client is the first connection.
	if _, err := h.call(req("edge", desc(kv{"user", "a"}))); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	second := dial()
	if err := check(second, 5*time.Second); err != nil {
		t.Fatalf("second connection: %v", err)
	}
	third := dial()
	if err := check(third, 500*time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("third connection while two are open: %v, want DeadlineExceeded (not served)", err)
	}
	second.Close()
	if err := check(third, 10*time.Second); err != nil {
		t.Fatalf("third connection after one closed: %v", err)
	}
}

// TestMaxConnectionsHTTP: with http.max_connections 2, a third keep-alive
// connection is not served until one of the first two closes.
func TestMaxConnectionsHTTP(t *testing.T) {
	h := start(t, edgeDomains(), false, withConfig(func(c *server.Config) { c.HTTP.MaxConnections = 2 }))
	addr := h.srv.HTTPAddr().String()
	type client struct {
		conn net.Conn
		r    *bufio.Reader
	}
	open := func() client {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := conn.Write([]byte("GET /health/live HTTP/1.1\r\nHost: sluice\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		return client{conn, bufio.NewReader(conn)}
	}
	answer := func(c client, timeout time.Duration) error {
		_ = c.conn.SetReadDeadline(time.Now().Add(timeout)) // a failure shows as the read's error
		resp, err := http.ReadResponse(c.r, nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}
	a, b := open(), open()
	for _, c := range []client{a, b} {
		if err := answer(c, 5*time.Second); err != nil {
			t.Fatalf("one of the first two connections: %v", err)
		}
	}
	c := open()
	var ne net.Error
	if err := answer(c, 500*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("third connection while two are open: %v, want no answer", err)
	}
	a.conn.Close()
	// The request was written before; the server reads it once it accepts.
	if err := answer(c, 10*time.Second); err != nil {
		t.Fatalf("third connection after one closed: %v", err)
	}
}

// TestHTTPTLS serves HTTP with mutual TLS and the admin API on its own
// address with TLS; plaintext is refused on both.
func TestHTTPTLS(t *testing.T) {
	ca := newCA(t)
	write := tempWriter(t)
	sc, sk := ca.issue(t, 2, true)
	cc, ck := ca.issue(t, 3, false)
	const token = "an-admin-token-of-at-least-32-characters"
	h := start(t, edgeDomains(), false, withConfig(func(c *server.Config) {
		c.HTTP.TLS = server.TLSConfig{CertFile: write("s.pem", sc), KeyFile: write("s.key", sk), ClientCAFile: write("ca.pem", ca.pem)}
		c.HTTP.AdminAddr = "127.0.0.1:0"
		c.HTTP.AdminTLS = server.TLSConfig{CertFile: write("s.pem", sc), KeyFile: write("s.key", sk)}
	}), withOptions(func(o *server.Options) { o.AdminToken = token }))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.pem)
	clientCert, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	get := func(url string, certs []tls.Certificate, auth string) (int, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}, DisableKeepAlives: true}}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	httpAddr, adminAddr := h.srv.HTTPAddr().String(), h.srv.AdminAddr().String()
	if code, err := get("https://"+httpAddr+"/health/live", []tls.Certificate{clientCert}, ""); err != nil || code != 200 {
		t.Errorf("HTTPS with a client certificate: %d, %v", code, err)
	}
	if code, err := get("https://"+httpAddr+"/health/live", nil, ""); err == nil {
		t.Errorf("HTTPS without a client certificate: %d, want refused", code)
	}
	if code, err := get("http://"+httpAddr+"/health/live", nil, ""); err == nil && code == 200 {
		t.Errorf("plain HTTP to the TLS listener answered 200")
	}
	adminPath := "/admin/debug/pprof/goroutine"
	if code, err := get("https://"+adminAddr+adminPath, nil, token); err != nil || code != 200 {
		t.Errorf("admin over HTTPS: %d, %v", code, err)
	}
	if code, err := get("http://"+adminAddr+adminPath, nil, token); err == nil && code == 200 {
		t.Errorf("plain HTTP to the admin TLS listener answered 200")
	}
}

func TestShortAdminTokenRefused(t *testing.T) {
	short := strings.Repeat("k", server.MinAdminTokenLen-1)
	_, err := server.New(server.DefaultConfig(), nil, server.Options{AdminToken: short})
	if err == nil {
		t.Fatalf("New accepted a %d-character admin token", len(short))
	}
	if msg := err.Error(); !strings.Contains(msg, "admin token") || strings.Contains(msg, short) {
		t.Errorf("error %q: want it to name the admin token and not show it", msg)
	}
	if _, err := server.New(server.DefaultConfig(), nil, server.Options{AdminToken: short + "k"}); err != nil {
		t.Errorf("a %d-character token: %v", server.MinAdminTokenLen, err)
	}
}

func TestExposureConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		set   func(*server.Config)
		field string
	}{
		{"http tls key without cert", func(c *server.Config) { c.HTTP.TLS.KeyFile = "k.pem" }, "http.tls"},
		{"http client ca alone", func(c *server.Config) { c.HTTP.TLS.ClientCAFile = "ca.pem" }, "http.tls.client_ca_file"},
		{"admin tls without admin addr", func(c *server.Config) {
			c.HTTP.AdminTLS = server.TLSConfig{CertFile: "c.pem", KeyFile: "k.pem"}
		}, "http.admin_tls"},
		{"admin tls half", func(c *server.Config) { c.HTTP.AdminAddr = ":8082"; c.HTTP.AdminTLS.CertFile = "c.pem" }, "http.admin_tls"},
		{"negative grpc max connections", func(c *server.Config) { c.GRPC.MaxConnections = -1 }, "grpc.max_connections"},
		{"negative http max connections", func(c *server.Config) { c.HTTP.MaxConnections = -1 }, "http.max_connections"},
		{"unknown codec", func(c *server.Config) { c.GRPC.Codec = "fast" }, "grpc.codec"},
		{"empty codec", func(c *server.Config) { c.GRPC.Codec = "" }, "grpc.codec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := server.DefaultConfig()
			tc.set(&cfg)
			err := cfg.Validate()
			var fe *server.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("Validate: %v, want an error on %s", err, tc.field)
			}
		})
	}
	cfg := server.DefaultConfig()
	if cfg.GRPC.MaxConnections != 10000 || cfg.HTTP.MaxConnections != 10000 {
		t.Errorf("default max connections grpc %d, http %d, want 10000", cfg.GRPC.MaxConnections, cfg.HTTP.MaxConnections)
	}
	cfg.GRPC.MaxConnections, cfg.HTTP.MaxConnections = 0, 0 // no bound
	if err := cfg.Validate(); err != nil {
		t.Errorf("max connections 0: %v", err)
	}
}
