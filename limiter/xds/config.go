package xds

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Config is limits.xds: where the control plane is and how to reach it.
// An empty Server turns xDS off.
type Config struct {
	// Server is the control plane's host:port.
	Server string `yaml:"server"`
	// NodeID is the node id sent to the control plane; it picks the
	// snapshot (Envoy Gateway serves node envoy-ratelimit).
	NodeID string `yaml:"node_id"`
	// NodeMetadata is the node's metadata in envoyproxy/ratelimit's form
	// (CONFIG_GRPC_XDS_NODE_METADATA): key=value pairs separated by commas,
	// each value a string.
	NodeMetadata string `yaml:"node_metadata"`
	// StartWithoutConfig serves at once, with no limits (every domain
	// unknown, so every request OK), until the first config arrives.
	// Without it the listeners bind but nothing is ready until then.
	StartWithoutConfig bool `yaml:"start_without_config"`
	// MaxRecvMsgBytes bounds a response from the control plane; 0 is
	// gRPC's default (4 MiB).
	MaxRecvMsgBytes int `yaml:"max_recv_msg_bytes"`
	// TLS secures the stream; off, it is plain text.
	TLS TLSConfig `yaml:"tls"`
	// Backoff spaces the reconnects while the control plane is away.
	Backoff BackoffConfig `yaml:"backoff"`
}

// TLSConfig is the client side of TLS to the control plane.
type TLSConfig struct {
	Enabled bool `yaml:"enabled"`
	// CertFile and KeyFile are the client certificate, for mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile verifies the control plane's certificate; "" uses the
	// system's roots.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name the control plane's certificate must carry;
	// "" is the host of Server.
	ServerName string `yaml:"server_name"`
}

// BackoffConfig is the wait between reconnects: Initial, doubling on each
// failed attempt up to Max; with Jitter each wait is spread at random by
// up to RandomFactor of itself either way. A stream that delivered a
// response starts again from Initial.
type BackoffConfig struct {
	Initial      time.Duration `yaml:"initial"`
	Max          time.Duration `yaml:"max"`
	RandomFactor float64       `yaml:"random_factor"`
	Jitter       bool          `yaml:"jitter"`
}

// DefaultConfig is limits.xds unless configured: off, with
// envoyproxy/ratelimit's defaults for the rest.
func DefaultConfig() Config {
	return Config{
		NodeID:  "default",
		Backoff: BackoffConfig{Initial: 10 * time.Second, Max: 60 * time.Second, RandomFactor: 0.5, Jitter: true},
	}
}

// Enabled reports whether limits come over xDS.
func (c *Config) Enabled() bool { return c.Server != "" }

// ConfigError is a problem with one field of Config, as config.yaml
// spells it under limits.xds.
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return "limits.xds." + e.Field + ": " + e.Err.Error() }

func (e *ConfigError) Unwrap() error { return e.Err }

// FieldProblem places the error under its section (yamlconf.Under).
func (e *ConfigError) FieldProblem() (field, problem string) { return e.Field, e.Err.Error() }

// Validate checks the settings and reads the TLS files; the error joins
// one *ConfigError per problem.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &ConfigError{Field: field, Err: fmt.Errorf(format, args...)})
	}
	if !c.Enabled() {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Server); err != nil {
		add("server", "%q is not host:port: %v", c.Server, err)
	}
	if c.NodeID == "" {
		add("node_id", "must not be empty")
	}
	if _, err := ParseNodeMetadata(c.NodeMetadata); err != nil {
		add("node_metadata", "%v", err)
	}
	if c.MaxRecvMsgBytes < 0 {
		add("max_recv_msg_bytes", "must not be negative, got %d", c.MaxRecvMsgBytes)
	}
	b := c.Backoff
	if b.Initial <= 0 {
		add("backoff.initial", "must be positive")
	}
	if b.Max < b.Initial {
		add("backoff.max", "%v is below backoff.initial %v", b.Max, b.Initial)
	}
	if !(b.RandomFactor >= 0 && b.RandomFactor <= 1) {
		add("backoff.random_factor", "must be between 0 and 1, got %v", b.RandomFactor)
	}
	if c.TLS.Enabled {
		if _, err := c.TLS.load(); err != nil {
			errs = append(errs, err.(interface{ Unwrap() []error }).Unwrap()...) // load joins ConfigErrors
		}
	} else if c.TLS.CertFile != "" || c.TLS.KeyFile != "" || c.TLS.CAFile != "" {
		add("tls.enabled", "is false, but tls files are given; set enabled: true or remove them")
	}
	return errors.Join(errs...)
}

// load builds the client's tls.Config from the files.
func (t *TLSConfig) load() (*tls.Config, error) {
	var errs []error
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			errs = append(errs, &ConfigError{Field: "tls.cert_file", Err: err})
		} else {
			cfg.Certificates = []tls.Certificate{cert}
		}
	case t.CertFile != "":
		errs = append(errs, &ConfigError{Field: "tls.key_file", Err: errors.New("missing: cert_file needs key_file")})
	case t.KeyFile != "":
		errs = append(errs, &ConfigError{Field: "tls.cert_file", Err: errors.New("missing: key_file needs cert_file")})
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			errs = append(errs, &ConfigError{Field: "tls.ca_file", Err: err})
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, &ConfigError{Field: "tls.ca_file", Err: fmt.Errorf("%s: no PEM certificate found", t.CAFile)})
			}
			cfg.RootCAs = pool
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// ParseNodeMetadata parses envoyproxy/ratelimit's node metadata form,
// key=value pairs separated by commas. It is stricter than
// envoyproxy/ratelimit, which skips a pair without '=': that is an error
// here, as is an empty key.
func ParseNodeMetadata(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value (pairs are separated by commas)", pair)
		}
		out[k] = v
	}
	return out, nil
}

// node is the node the client presents: its id and metadata, each value
// a string as envoyproxy/ratelimit sends it.
func (c *Config) node() *corev3.Node {
	md, _ := ParseNodeMetadata(c.NodeMetadata) // checked by Validate
	fields := make(map[string]*structpb.Value, len(md))
	for k, v := range md {
		fields[k] = structpb.NewStringValue(v)
	}
	return &corev3.Node{Id: c.NodeID, Metadata: &structpb.Struct{Fields: fields}}
}
