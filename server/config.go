package server

import (
	"errors"
	"fmt"
	"net/textproto"
	"strings"
	"time"
)

// Config configures the gRPC and HTTP edges. Start from DefaultConfig.
type Config struct {
	GRPC            GRPCConfig     `yaml:"grpc"`
	HTTP            HTTPConfig     `yaml:"http"`
	ResponseHeaders HeaderConfig   `yaml:"response_headers"`
	Health          HealthConfig   `yaml:"health"`
	Shutdown        ShutdownConfig `yaml:"shutdown"`
}

// GRPCConfig configures the gRPC listener.
type GRPCConfig struct {
	Addr string `yaml:"addr"`
	// MaxRecvMsgBytes bounds a request message, counted as the bytes
	// received; a larger RateLimitRequest is answered INVALID_ARGUMENT. Messages beyond twice the bound are refused
	// by the transport before they are read (RESOURCE_EXHAUSTED).
	MaxRecvMsgBytes      int    `yaml:"max_recv_msg_bytes"`
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
	// StreamWorkers is how many long-lived goroutines serve calls; a call
	// arriving while all are busy gets a goroutine of its own, as every
	// call does with 0. Workers keep the stack a call grew, where a fresh
	// goroutine grows (copies) it on each call.
	StreamWorkers uint32 `yaml:"stream_workers"`
	// KeepaliveMinTime is the shortest interval between client pings the
	// server tolerates; a client pinging faster is disconnected.
	KeepaliveMinTime time.Duration `yaml:"keepalive_min_time"`
	// MaxConnections bounds the open client connections; one more waits
	// in the kernel's accept queue until another closes. 0: no bound.
	MaxConnections int       `yaml:"max_connections"`
	TLS            TLSConfig `yaml:"tls"`
	// Codec is how ShouldRateLimit messages are decoded and encoded:
	// "grpc" through the protobuf runtime (interceptors see the messages),
	// "direct" by the hand-made codec of server/internal/wire (no protobuf
	// messages allocated; interceptors see bytes). Both hold a request to
	// the bounds while reading it. See codec.go.
	Codec string `yaml:"codec"`
	// ResponseDynamicMetadata sets the response's dynamic_metadata as
	// envoyproxy/ratelimit's RESPONSE_DYNAMIC_METADATA does: the domain,
	// the descriptors and the merged metadata of the limits that passed.
	// Off by default: it costs allocations on every answer.
	ResponseDynamicMetadata bool `yaml:"response_dynamic_metadata"`
}

// TLSConfig turns on TLS when CertFile and KeyFile are set, and mutual TLS
// when ClientCAFile is set too.
type TLSConfig struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether TLS is configured.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// HTTPConfig configures the HTTP listener.
type HTTPConfig struct {
	Addr         string `yaml:"addr"`
	MaxBodyBytes int64  `yaml:"max_body_bytes"`
	// MaxConnections bounds the open connections of each HTTP listener
	// (Addr, and AdminAddr when set); one more waits in the kernel's accept
	// queue until another closes. 0: no bound.
	MaxConnections int `yaml:"max_connections"`
	// TLS turns on HTTPS for Addr, and for the admin API when it is served
	// there.
	TLS TLSConfig `yaml:"tls"`
	// AdminAddr, when set, serves the admin API (/admin/...) on a listener
	// of its own (a loopback or internal address) and not on Addr.
	AdminAddr string `yaml:"admin_addr"`
	// AdminTLS turns on HTTPS for AdminAddr; it needs AdminAddr.
	AdminTLS TLSConfig `yaml:"admin_tls"`
	// MetricsAddr, when set, also serves the Prometheus metrics on a plain
	// HTTP listener of its own, at MetricsPath (default /metrics), as
	// envoyproxy/ratelimit's PROMETHEUS_ADDR does; /metrics stays on Addr.
	MetricsAddr string `yaml:"metrics_addr"`
	MetricsPath string `yaml:"metrics_path"`
	// Healthcheck serves GET /healthcheck on Addr as envoyproxy/ratelimit
	// answers it: 200 "OK" while ready, 500 otherwise. For drop-in use.
	Healthcheck bool `yaml:"healthcheck"`
}

// DefaultMetricsPath is http.metrics_path unless configured.
const DefaultMetricsPath = "/metrics"

// HeaderConfig configures the rate-limit response headers (draft-03 form).
type HeaderConfig struct {
	Enabled   bool   `yaml:"enabled"`
	Limit     string `yaml:"limit"`
	Remaining string `yaml:"remaining"`
	Reset     string `yaml:"reset"`
}

// HealthConfig configures the background readiness checks.
type HealthConfig struct {
	CheckInterval time.Duration `yaml:"check_interval"`
	CheckTimeout  time.Duration `yaml:"check_timeout"`
}

// ShutdownConfig orders the drain: readiness turns false, then after
// DrainDelay the servers stop taking work and get Timeout to finish it.
type ShutdownConfig struct {
	DrainDelay time.Duration `yaml:"drain_delay"`
	Timeout    time.Duration `yaml:"timeout"`
}

// DefaultStreamWorkers is grpc.stream_workers unless configured.
const DefaultStreamWorkers = 256

// DefaultMaxConnections is grpc.max_connections and http.max_connections
// unless configured.
const DefaultMaxConnections = 10000

// MinAdminTokenLen is the shortest admin token accepted: a token is a
// bearer secret, so it must not be guessable.
const MinAdminTokenLen = 32

// HandshakeTimeout bounds how long a new connection may take to speak:
// the HTTP/2 preface (and TLS handshake) on gRPC, the TLS handshake and
// request headers on HTTP. A connection that stays silent is closed.
const HandshakeTimeout = 5 * time.Second

// DefaultConfig is the configuration used where none is given.
func DefaultConfig() Config {
	return Config{
		GRPC: GRPCConfig{
			Addr:                 ":8081",
			MaxRecvMsgBytes:      1 << 20,
			MaxConcurrentStreams: 1024,
			StreamWorkers:        DefaultStreamWorkers,
			KeepaliveMinTime:     10 * time.Second,
			MaxConnections:       DefaultMaxConnections,
			Codec:                DefaultCodec,
		},
		HTTP: HTTPConfig{Addr: ":8080", MaxBodyBytes: 1 << 20, MaxConnections: DefaultMaxConnections},
		ResponseHeaders: HeaderConfig{
			Enabled:   true,
			Limit:     "X-RateLimit-Limit",
			Remaining: "X-RateLimit-Remaining",
			Reset:     "X-RateLimit-Reset",
		},
		Health:   HealthConfig{CheckInterval: 2 * time.Second, CheckTimeout: time.Second},
		Shutdown: ShutdownConfig{DrainDelay: time.Second, Timeout: 10 * time.Second},
	}
}

// FieldError is a configuration value that is not allowed. Field is the
// dotted path of the setting as config.yaml spells it.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// FieldProblem is the field and the problem, for config.yaml's one error
// format (the field is already the full path).
func (e *FieldError) FieldProblem() (field, problem string) { return e.Field, e.Msg }

// Validate checks every setting and returns all problems, each a
// *FieldError, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if c.GRPC.Addr == "" {
		bad("grpc.addr", "must not be empty")
	}
	if c.GRPC.MaxRecvMsgBytes < 1024 {
		bad("grpc.max_recv_msg_bytes", "%d is less than the minimum of 1024", c.GRPC.MaxRecvMsgBytes)
	}
	if c.GRPC.MaxRecvMsgBytes > 64<<20 {
		bad("grpc.max_recv_msg_bytes", "%d is more than the maximum of %d", c.GRPC.MaxRecvMsgBytes, 64<<20)
	}
	if c.GRPC.MaxConcurrentStreams == 0 {
		bad("grpc.max_concurrent_streams", "must be at least 1")
	}
	if c.GRPC.StreamWorkers > 1<<16 {
		bad("grpc.stream_workers", "%d is more than the maximum of %d", c.GRPC.StreamWorkers, 1<<16)
	}
	if c.GRPC.KeepaliveMinTime < 0 {
		bad("grpc.keepalive_min_time", "must not be negative")
	}
	if c.GRPC.MaxConnections < 0 {
		bad("grpc.max_connections", "must not be negative (0: no bound)")
	}
	if c.GRPC.Codec != CodecGRPC && c.GRPC.Codec != CodecDirect {
		bad("grpc.codec", "%q: must be %s or %s", c.GRPC.Codec, CodecDirect, CodecGRPC)
	}
	validateTLS(bad, "grpc.tls", c.GRPC.TLS)
	if c.HTTP.Addr == "" {
		bad("http.addr", "must not be empty")
	}
	if c.HTTP.MaxConnections < 0 {
		bad("http.max_connections", "must not be negative (0: no bound)")
	}
	validateTLS(bad, "http.tls", c.HTTP.TLS)
	validateTLS(bad, "http.admin_tls", c.HTTP.AdminTLS)
	if c.HTTP.AdminTLS.Enabled() && c.HTTP.AdminAddr == "" {
		bad("http.admin_tls", "needs http.admin_addr; without it the admin API is served on http.addr, with http.tls")
	}
	if p := c.HTTP.MetricsPath; p != "" && (p[0] != '/' || strings.ContainsAny(p, " {}")) {
		bad("http.metrics_path", "%q must start with / and hold no space or braces", p)
	}
	if c.HTTP.MetricsPath != "" && c.HTTP.MetricsAddr == "" {
		bad("http.metrics_path", "needs http.metrics_addr")
	}
	if c.HTTP.MaxBodyBytes < 1024 {
		bad("http.max_body_bytes", "%d is less than the minimum of 1024", c.HTTP.MaxBodyBytes)
	}
	if c.ResponseHeaders.Enabled {
		for _, h := range []struct{ field, name string }{
			{"response_headers.limit", c.ResponseHeaders.Limit},
			{"response_headers.remaining", c.ResponseHeaders.Remaining},
			{"response_headers.reset", c.ResponseHeaders.Reset},
		} {
			if !validHeaderName(h.name) {
				bad(h.field, "%q is not a valid header name", h.name)
			}
		}
	}
	if c.Health.CheckInterval <= 0 {
		bad("health.check_interval", "must be positive")
	}
	if c.Health.CheckTimeout <= 0 {
		bad("health.check_timeout", "must be positive")
	}
	if c.Shutdown.DrainDelay < 0 {
		bad("shutdown.drain_delay", "must not be negative")
	}
	if c.Shutdown.Timeout <= 0 {
		bad("shutdown.timeout", "must be positive")
	}
	return errors.Join(errs...)
}

// validateTLS checks that a TLS setting is whole.
func validateTLS(bad func(field, format string, args ...any), field string, t TLSConfig) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad(field, "cert_file and key_file must be set together")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		bad(field+".client_ca_file", "needs cert_file and key_file")
	}
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '-' || c == '_' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
		if !ok {
			return false
		}
	}
	return textproto.CanonicalMIMEHeaderKey(s) != ""
}
