package tracing_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sluice-rl/sluice/cmd/sluice/internal/tracing"
)

// TestValidate: each bad setting is named by its field, and an endpoint
// with credentials is refused without repeating them.
func TestValidate(t *testing.T) {
	if err := tracing.DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*tracing.Config)
		want string
	}{
		{"protocol", func(c *tracing.Config) { c.Protocol = "zipkin" }, `protocol: "zipkin" is not one of grpc, http`},
		{"ratio", func(c *tracing.Config) { c.SamplingRatio = 1.5 }, "sampling_ratio: must be between 0 and 1"},
		{"endpoint", func(c *tracing.Config) { c.Endpoint = "collector" }, "endpoint: want host:port or an http(s) URL"},
		{"scheme", func(c *tracing.Config) { c.Endpoint = "ftp://collector:4317" }, `endpoint: URL scheme "ftp"`},
		{"credentials", func(c *tracing.Config) { c.Endpoint = "https://user:hunter2@collector:4318" }, "endpoint: URL must not carry credentials"},
		{"service", func(c *tracing.Config) { c.Enabled, c.ServiceName = true, " " }, "service_name: must not be empty"},
		{"shutdown", func(c *tracing.Config) { c.ShutdownTimeout = 0 }, "shutdown_timeout: must be positive"},
		{"insecure tls", func(c *tracing.Config) { c.Insecure, c.TLS.CAFile = true, "/ca.pem" }, "insecure: conflicts with tls"},
		{"half a key pair", func(c *tracing.Config) { c.TLS.CertFile = "/c.pem" }, "tls: cert_file and key_file go together"},
		{"missing ca", func(c *tracing.Config) { c.TLS.CAFile = "/nonexistent/ca.pem" }, "tls.ca_file:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := tracing.DefaultConfig()
			c.edit(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error repeats the password: %v", err)
			}
		})
	}
}

// TestNewAndShutdown starts a provider for a collector that is not there:
// New does not wait for it, and Shutdown returns within its bound.
func TestNewAndShutdown(t *testing.T) {
	for _, proto := range []string{tracing.ProtocolGRPC, tracing.ProtocolHTTP} {
		t.Run(proto, func(t *testing.T) {
			cfg := tracing.DefaultConfig()
			cfg.Enabled, cfg.Protocol, cfg.Endpoint, cfg.Insecure = true, proto, "127.0.0.1:1", true
			cfg.ShutdownTimeout = 200e6 // 200 ms
			p, err := tracing.New(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, span := p.Tracer().Start(context.Background(), "lost")
			span.End()
			// The span cannot be delivered; what matters is that Shutdown
			// returns (with or without an error) rather than hang.
			_ = p.Shutdown(context.Background())
		})
	}
	if _, err := tracing.New(context.Background(), tracing.DefaultConfig()); err == nil {
		t.Error("New of a disabled config: no error")
	}
}
