// Package tracing exports OpenTelemetry spans of the decisions over OTLP.
// It builds the tracer provider from Config (exporter, sampler, resource)
// and shuts it down, flushing what is queued within a bound. It imports
// only the OpenTelemetry SDK and exporters and the standard library; the
// spans themselves are made where the work is (server for the decision,
// the stores for their calls), from the trace.Tracer that Provider gives.
package tracing

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"
)

// Protocols of the OTLP exporter.
const (
	ProtocolGRPC = "grpc" // OTLP/gRPC, port 4317 by default
	ProtocolHTTP = "http" // OTLP/HTTP with protobuf bodies, port 4318 by default
)

// Config is the tracing section of config.yaml. Start from DefaultConfig.
type Config struct {
	Enabled bool `yaml:"enabled"`
	// Endpoint is the collector: host:port, or a URL (http:// is
	// cleartext, https:// TLS; for the http protocol its path is the
	// traces path, default /v1/traces). Empty: the exporter's own
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT,
	// else localhost on the protocol's port.
	Endpoint string `yaml:"endpoint"`
	Protocol string `yaml:"protocol"`
	// Insecure sends cleartext to a host:port Endpoint. A URL's scheme
	// decides for itself.
	Insecure bool      `yaml:"insecure"`
	TLS      TLSConfig `yaml:"tls"`
	// SamplingRatio is the share of traces started here that are kept,
	// 0 to 1. A request whose caller's trace context says sampled or not
	// follows it (parent-based), as envoyproxy/ratelimit does.
	SamplingRatio float64 `yaml:"sampling_ratio"`
	// The resource: service.name, service.namespace (omitted when empty)
	// and service.instance.id (a random UUID when empty).
	ServiceName       string `yaml:"service_name"`
	ServiceNamespace  string `yaml:"service_namespace"`
	ServiceInstanceID string `yaml:"service_instance_id"`
	// ShutdownTimeout bounds the flush of queued spans at shutdown.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// TLSConfig is the exporter's TLS: a CA to trust instead of the system
// roots, and a client certificate for mutual TLS.
type TLSConfig struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

func (t TLSConfig) set() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// DefaultConfig is tracing off, and when turned on OTLP/gRPC, every trace
// kept, service name "sluice".
func DefaultConfig() Config {
	return Config{Protocol: ProtocolGRPC, SamplingRatio: 1, ServiceName: "sluice", ShutdownTimeout: 5 * time.Second}
}

// ConfigError is an invalid Config field, relative to the tracing
// section.
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// FieldProblem is the field and the problem, for config.yaml's one error
// format.
func (e *ConfigError) FieldProblem() (field, problem string) { return e.Field, e.Err.Error() }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks c, naming every bad field; it reads the TLS files as New
// does. Settings are checked even when tracing is off, so turning it on
// later finds no surprise.
func (c Config) Validate() error {
	var errs []error
	if c.Protocol != ProtocolGRPC && c.Protocol != ProtocolHTTP {
		errs = append(errs, fieldErr("protocol", "%q is not one of grpc, http", c.Protocol))
	}
	if err := checkEndpoint(c.Endpoint); err != nil {
		errs = append(errs, &ConfigError{Field: "endpoint", Err: err})
	}
	if r := c.SamplingRatio; math.IsNaN(r) || r < 0 || r > 1 {
		errs = append(errs, fieldErr("sampling_ratio", "must be between 0 and 1, got %v", r))
	}
	if c.Enabled && strings.TrimSpace(c.ServiceName) == "" {
		errs = append(errs, fieldErr("service_name", "must not be empty"))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fieldErr("shutdown_timeout", "must be positive, got %v", c.ShutdownTimeout))
	}
	if c.Insecure && c.TLS.set() {
		errs = append(errs, fieldErr("insecure", "conflicts with tls: cleartext has no certificates"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, fieldErr("tls", "cert_file and key_file go together"))
	} else if c.TLS.set() {
		if _, err := c.TLS.load(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkEndpoint accepts "", host:port, or an http(s) URL with a host. Its
// errors never repeat the value: a URL may carry credentials.
func checkEndpoint(ep string) error {
	if ep == "" {
		return nil
	}
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		switch {
		case err != nil:
			return errors.New("not a valid URL")
		case u.Scheme != "http" && u.Scheme != "https":
			return fmt.Errorf("URL scheme %q: want http or https", u.Scheme)
		case u.Host == "":
			return errors.New("URL has no host")
		case u.User != nil:
			return errors.New("URL must not carry credentials; send them as headers (OTEL_EXPORTER_OTLP_HEADERS)")
		}
		return nil
	}
	if _, port, err := net.SplitHostPort(ep); err != nil || port == "" {
		return errors.New("want host:port or an http(s) URL")
	}
	return nil
}

func (t TLSConfig) load() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fieldErr("tls.ca_file", "%v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fieldErr("tls.ca_file", "%s: no PEM certificate found", t.CAFile)
		}
	}
	if t.CertFile != "" {
		kp, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fieldErr("tls.cert_file", "%v", err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg, nil
}

// Provider is a running tracer provider and its exporter.
type Provider struct {
	tp      *sdktrace.TracerProvider
	tracer  trace.Tracer
	timeout time.Duration
}

// InstrumentationName names Sluice's tracer.
const InstrumentationName = "github.com/sluice-rl/sluice"

// New starts the exporter and the provider for c, which must be enabled
// and valid. It does not wait for the collector: spans are batched and
// sent in the background, and a collector that is down loses spans, never
// decisions. The provider is not installed globally; callers hand its
// Tracer to what makes spans.
func New(ctx context.Context, c Config) (*Provider, error) {
	if !c.Enabled {
		return nil, errors.New("tracing: not enabled")
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	exp, err := newExporter(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("tracing: start OTLP exporter: %w", err)
	}
	instance := c.ServiceInstanceID
	if instance == "" {
		instance = randomUUID()
	}
	attrs := []attribute.KeyValue{
		attribute.String("service.name", c.ServiceName),
		attribute.String("service.instance.id", instance),
	}
	if c.ServiceNamespace != "" {
		attrs = append(attrs, attribute.String("service.namespace", c.ServiceNamespace))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SamplingRatio))),
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
	)
	return &Provider{tp: tp, tracer: tp.Tracer(InstrumentationName), timeout: c.ShutdownTimeout}, nil
}

func newExporter(ctx context.Context, c Config) (*otlptrace.Exporter, error) {
	var tlsCfg *tls.Config
	if c.TLS.set() {
		var err error
		if tlsCfg, err = c.TLS.load(); err != nil {
			return nil, err
		}
	}
	isURL := strings.Contains(c.Endpoint, "://")
	if c.Protocol == ProtocolHTTP {
		var opts []otlptracehttp.Option
		switch {
		case isURL:
			opts = append(opts, otlptracehttp.WithEndpointURL(c.Endpoint))
		case c.Endpoint != "":
			opts = append(opts, otlptracehttp.WithEndpoint(c.Endpoint))
		}
		if c.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		if tlsCfg != nil {
			opts = append(opts, otlptracehttp.WithTLSClientConfig(tlsCfg))
		}
		return otlptracehttp.New(ctx, opts...)
	}
	var opts []otlptracegrpc.Option
	switch {
	case isURL:
		opts = append(opts, otlptracegrpc.WithEndpointURL(c.Endpoint))
	case c.Endpoint != "":
		opts = append(opts, otlptracegrpc.WithEndpoint(c.Endpoint))
	}
	if c.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	if tlsCfg != nil {
		opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
	}
	return otlptracegrpc.New(ctx, opts...)
}

// Tracer is the tracer for Sluice's spans.
func (p *Provider) Tracer() trace.Tracer { return p.tracer }

// Shutdown sends the spans still queued and stops the exporter, within the
// configured shutdown timeout: ctx is usually the serving context, already
// ended, so its values are kept and its end is not. Spans not sent by then
// are dropped and the error says so.
func (p *Provider) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	defer cancel()
	if err := p.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: flush and stop the exporter: %w", err)
	}
	return nil
}

func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
