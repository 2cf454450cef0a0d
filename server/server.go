package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/sluice-rl/sluice/breaker"
	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/server/internal/wire"
	"github.com/sluice-rl/sluice/server/metrics"
)

// ServiceName is the gRPC service name of the Envoy rate-limit API, also a
// health-check service name.
const ServiceName = "envoy.service.ratelimit.v3.RateLimitService"

// Check is a backend check run in the background; see Options.Checks.
type Check struct {
	// Name is the backend's name in health output and logs ("redis").
	Name string
	// Fn reports whether the backend answers. It is called with a context
	// bounded by health.check_timeout. Its error is shown and logged, so it
	// must not contain credentials.
	Fn func(ctx context.Context) error
	// Optional marks a backend the server decides without, or around (a
	// failure mode): while its check fails the server stays ready and
	// /health/detailed says warn, not fail.
	Optional bool
	// WarnOnly marks a source the server keeps deciding without (an xDS
	// control plane: the last limits stay): a failing check is shown as
	// warn with its error as the note, never as fail. It implies Optional.
	WarnOnly bool
	// Breaker, when set, is the circuit breaker guarding the backend; its
	// state is shown with the check and under "breakers", and the admin API
	// can reset it. Each result of Fn, except the breaker's own refusal
	// (ErrOpen), is reported to it with ReportCheck: once its open period
	// has passed, a passing check closes it and a failing one reopens it.
	Breaker *breaker.Breaker
	// Mode, when set, is shown as the check's "mode" (Redis: "single").
	Mode string
	// Address, when set, is shown as the check's "address": the backend's
	// host:port (comma-separated when several), never a URL, user name or
	// password.
	Address string
	// Overrides, when set, is shown as the check's "overrides" (Postgres:
	// the number of overrides loaded).
	Overrides func() int
}

// ConfigStatus is the state of the configuration, for /health/detailed.
type ConfigStatus struct {
	Version  string    // of the running limits, "sha256:..."
	LoadedAt time.Time // when they were loaded
	// LastError is the last failed reload's error, cleared by a good
	// reload; nil when the last reload worked.
	LastError error
	// Source is where the limits come from: "file", "xds" or "file+xds";
	// "" is not shown.
	Source string
	// XDSVersion is the version_info of the xDS config in force.
	XDSVersion string
}

// Options are the parts a Server is given rather than configured with.
type Options struct {
	Logger *slog.Logger // nil: discard
	// Checks are the backends. A check that is not Optional must pass for
	// the server to be ready. Results are cached and refreshed every
	// health.check_interval, so probing health never loads a backend.
	Checks []Check
	// Version is the build, shown by /health/detailed.
	Version string
	// FailureMode is shown as failure_mode by /health/detailed; "" (the
	// embedded store, which has none) shows null.
	FailureMode string
	// ConfigStatus reports the configuration's state; nil shows the
	// running limits' version and when the server was made.
	ConfigStatus func() ConfigStatus
	// AdminToken turns the admin API (/admin/...) on; callers must send
	// it as a bearer token. Empty: every /admin/ path is 404. A token
	// shorter than MinAdminTokenLen is refused by New.
	AdminToken string
	// Metrics, when set, counts decisions, gRPC calls and backend checks,
	// and is served at GET /metrics.
	Metrics *metrics.Metrics
	// Tracer, when set, makes a span of every decision (gRPC and /json),
	// continuing the caller's W3C trace context; nil: no tracing, at no
	// cost on the request path.
	Tracer trace.Tracer
}

// Server serves the rate-limit API over gRPC and HTTP. Make one with New,
// bind with Listen, then Run it until its context ends.
type Server struct {
	cfg    Config
	lim    *limiter.Limiter
	log    *slog.Logger
	rls    *rls
	checks []Check

	grpc     *grpc.Server
	services map[string]bool // registered on grpc; read-only once New returns
	health   *health.Server
	http     *http.Server

	// httpTLS and adminTLS are the HTTPS settings of the HTTP and admin
	// listeners; nil: plain HTTP.
	httpTLS, adminTLS *tls.Config

	grpcLn, httpLn net.Listener
	adminLn        net.Listener // nil: the admin API is on httpLn
	adminHTTP      *http.Server
	metricsLn      net.Listener // nil: no http.metrics_addr
	metricsHTTP    *http.Server

	draining atomic.Bool
	stopping chan struct{} // closed when gRPC stops taking calls
	results  []atomic.Pointer[checkResult]
	ran      atomic.Bool

	version     string
	failureMode string
	configFn    func() ConfigStatus
	started     time.Time
	breakers    map[string]*breaker.Breaker
	adminToken  [32]byte // sha256 of the token
	adminOn     bool
	admin       *http.ServeMux
	metrics     *metrics.Metrics
}

type checkResult struct {
	err     error
	at      time.Time
	latency time.Duration
}

// New builds a Server deciding with lim. It reads the TLS files named in
// cfg but opens no listener.
func New(cfg Config, lim *limiter.Limiter, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if n := len(opts.AdminToken); n > 0 && n < MinAdminTokenLen {
		// The length only: the token itself is never shown.
		return nil, fmt.Errorf("admin token: %d characters, want at least %d", n, MinAdminTokenLen)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:      cfg,
		lim:      lim,
		log:      log,
		rls:      newRLS(lim, cfg),
		checks:   opts.Checks,
		health:   health.NewServer(),
		stopping: make(chan struct{}),

		version:     opts.Version,
		failureMode: opts.FailureMode,
		configFn:    opts.ConfigStatus,
		started:     time.Now(),
		breakers:    map[string]*breaker.Breaker{},
		admin:       http.NewServeMux(),
		metrics:     opts.Metrics,
	}
	s.rls.metrics = opts.Metrics
	s.rls.tracer = opts.Tracer
	s.results = make([]atomic.Pointer[checkResult], len(opts.Checks))
	for _, c := range opts.Checks {
		if c.Breaker != nil {
			s.breakers[c.Name] = c.Breaker
		}
	}
	if opts.AdminToken != "" {
		s.adminOn = true
		s.adminToken = sha256.Sum256([]byte(opts.AdminToken))
	}
	s.HandleAdmin("POST /admin/breakers/{name}/reset", http.HandlerFunc(s.handleBreakerReset))
	s.HandleAdmin("GET /admin/debug/pprof/{name}", http.HandlerFunc(s.handleProfile))
	s.HandleAdmin("GET /admin/debug/pprof/{$}", http.HandlerFunc(s.handleProfileIndex))

	gopts := []grpc.ServerOption{
		// The transport refuses messages beyond twice the bound before
		// reading them; ShouldRateLimit answers INVALID_ARGUMENT for those
		// between the bound and that.
		grpc.MaxRecvMsgSize(2*cfg.GRPC.MaxRecvMsgBytes + 64<<10),
		grpc.MaxConcurrentStreams(cfg.GRPC.MaxConcurrentStreams),
		grpc.ForceServerCodecV2(wire.NewCodec()),
		// gRPC waits 120 s by default for a new connection's preface; a
		// silent client should not hold a socket (and a max_connections
		// slot) that long.
		grpc.ConnectionTimeout(HandshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.GRPC.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
	}
	if n := cfg.GRPC.StreamWorkers; n > 0 {
		gopts = append(gopts, grpc.NumStreamWorkers(n))
	}
	var grpcStats *metrics.GRPCStats
	if m := opts.Metrics; m != nil {
		// A stats handler, not an interceptor: gRPC refuses over-size and
		// unreadable requests before interceptors run, and those count too.
		// Unknown methods go through unknownMethod so that they end as
		// calls the handler sees.
		grpcStats = m.GRPCStats()
		gopts = append(gopts, grpc.StatsHandler(grpcStats), grpc.UnknownServiceHandler(s.unknownMethod))
	}
	if cfg.GRPC.TLS.Enabled() {
		tc, err := serverTLS("grpc.tls", cfg.GRPC.TLS)
		if err != nil {
			return nil, err
		}
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tc)))
	}
	s.grpc = grpc.NewServer(gopts...)
	s.grpc.RegisterService(serviceDesc(cfg.GRPC.Codec), s.rls)
	healthpb.RegisterHealthServer(s.grpc, &healthService{Server: s.health, stopping: s.stopping})
	reflection.Register(s.grpc)
	s.services = map[string]bool{}
	for name := range s.grpc.GetServiceInfo() {
		s.services[name] = true
	}
	if grpcStats != nil {
		grpcStats.ServeServer(s.grpc)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)

	var err error
	if cfg.HTTP.TLS.Enabled() {
		if s.httpTLS, err = serverTLS("http.tls", cfg.HTTP.TLS); err != nil {
			return nil, err
		}
	}
	if cfg.HTTP.AdminTLS.Enabled() {
		if s.adminTLS, err = serverTLS("http.admin_tls", cfg.HTTP.AdminTLS); err != nil {
			return nil, err
		}
	}
	// ReadHeaderTimeout bounds the TLS handshake too (net/http takes the
	// smallest of the read, header and write timeouts for it).
	s.http = &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.httpTLS,
		ReadHeaderTimeout: HandshakeTimeout,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.HTTP.AdminAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/admin/", s.adminHandler())
		s.adminHTTP = &http.Server{
			Handler:           mux,
			TLSConfig:         s.adminTLS,
			ReadHeaderTimeout: HandshakeTimeout,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      10 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
	}
	if cfg.HTTP.MetricsAddr != "" {
		if opts.Metrics == nil {
			return nil, &FieldError{Field: "http.metrics_addr", Msg: "set, but the server has no metrics"}
		}
		path := cfg.HTTP.MetricsPath
		if path == "" {
			path = DefaultMetricsPath
		}
		mux := http.NewServeMux()
		mux.Handle("GET "+path, opts.Metrics.Handler())
		s.metricsHTTP = &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: HandshakeTimeout,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      10 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
	}
	return s, nil
}

// unknownMethod answers a call to a method the server does not serve as
// gRPC does by default: Unimplemented, with gRPC's text. Installed as the
// unknown-service handler, it makes gRPC run such calls through its call
// path, where the metrics' stats handler sees them end.
func (s *Server) unknownMethod(_ any, ss grpc.ServerStream) error {
	full, _ := grpc.MethodFromServerStream(ss)
	sm := strings.TrimPrefix(full, "/")
	svc, method := sm, ""
	if i := strings.LastIndex(sm, "/"); i >= 0 {
		svc, method = sm[:i], sm[i+1:]
	}
	if s.services[svc] {
		return status.Errorf(codes.Unimplemented, "unknown method %v for service %v", method, svc)
	}
	return status.Errorf(codes.Unimplemented, "unknown service %v", svc)
}

// serverTLS loads the files of the TLS setting named field.
func serverTLS(field string, c TLSConfig) (*tls.Config, error) { return c.Load(field) }

// Load reads the key pair and the client CA bundle of the TLS setting
// named field (grpc.tls, http.tls, http.admin_tls), as the server does
// before listening; errors are *FieldError naming the file's setting.
// Configuration checks call it to refuse what the server would.
func (c TLSConfig) Load(field string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, &FieldError{Field: field + ".cert_file", Msg: "load key pair: " + err.Error()}
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, &FieldError{Field: field + ".client_ca_file", Msg: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &FieldError{Field: field + ".client_ca_file", Msg: c.ClientCAFile + " holds no PEM certificate"}
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Listen binds the gRPC and HTTP addresses. Each listener accepts at most
// its max_connections connections at once.
func (s *Server) Listen() error {
	var lc net.ListenConfig
	g, err := lc.Listen(context.Background(), "tcp", s.cfg.GRPC.Addr)
	if err != nil {
		return fmt.Errorf("grpc.addr: %w", err)
	}
	h, err := lc.Listen(context.Background(), "tcp", s.cfg.HTTP.Addr)
	if err != nil {
		g.Close()
		return fmt.Errorf("http.addr: %w", err)
	}
	if s.cfg.HTTP.AdminAddr != "" {
		a, err := lc.Listen(context.Background(), "tcp", s.cfg.HTTP.AdminAddr)
		if err != nil {
			g.Close()
			h.Close()
			return fmt.Errorf("http.admin_addr: %w", err)
		}
		s.adminLn = a
	}
	if s.metricsHTTP != nil {
		m, err := lc.Listen(context.Background(), "tcp", s.cfg.HTTP.MetricsAddr)
		if err != nil {
			g.Close()
			h.Close()
			if s.adminLn != nil {
				s.adminLn.Close()
			}
			return fmt.Errorf("http.metrics_addr: %w", err)
		}
		s.metricsLn = limitListener(m, s.cfg.HTTP.MaxConnections)
	}
	s.grpcLn = limitListener(g, s.cfg.GRPC.MaxConnections)
	s.httpLn = limitListener(h, s.cfg.HTTP.MaxConnections)
	if s.adminLn != nil {
		s.adminLn = limitListener(s.adminLn, s.cfg.HTTP.MaxConnections)
	}
	return nil
}

// limitListener bounds ln to n open connections (0: no bound). Beyond the
// bound the server stops accepting, so new connections wait in the
// kernel's accept queue rather than cost a goroutine and buffers each.
func limitListener(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		return ln
	}
	return netutil.LimitListener(ln, n)
}

// serveHTTP serves hs on ln, over TLS when tc is set.
func serveHTTP(hs *http.Server, ln net.Listener, tc *tls.Config) error {
	if tc != nil {
		return hs.ServeTLS(ln, "", "") // the certificate is in hs.TLSConfig
	}
	return hs.Serve(ln)
}

// AdminAddr is the bound address of the admin API (after Listen): its own
// when http.admin_addr is set, else the HTTP address.
func (s *Server) AdminAddr() net.Addr {
	if s.adminLn != nil {
		return s.adminLn.Addr()
	}
	return s.httpLn.Addr()
}

// MetricsAddr is the bound address of the metrics listener (after
// Listen), or nil without http.metrics_addr.
func (s *Server) MetricsAddr() net.Addr {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Addr()
}

// GRPCAddr is the bound gRPC address (after Listen).
func (s *Server) GRPCAddr() net.Addr { return s.grpcLn.Addr() }

// HTTPAddr is the bound HTTP address (after Listen).
func (s *Server) HTTPAddr() net.Addr { return s.httpLn.Addr() }

// Run serves until ctx ends, then drains: readiness turns false (HTTP
// /health/ready 503, gRPC health NOT_SERVING), after shutdown.drain_delay
// gRPC stops taking calls and in-flight ones get shutdown.timeout to finish
// (then they are cut), and the HTTP server shuts down likewise. Run
// returns when every goroutine it started has ended; it returns an error
// only when a server failed. Closing the store is the caller's, after Run.
// Run may be called once; Listen must have been called.
func (s *Server) Run(ctx context.Context) error {
	if s.grpcLn == nil {
		return errors.New("server: Run before Listen")
	}
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("server: Run called twice")
	}
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	checkCtx, stopChecks := context.WithCancel(context.WithoutCancel(ctx))
	defer stopChecks()

	s.refreshHealth()
	wg.Add(3)
	go func() {
		defer wg.Done()
		s.runChecks(checkCtx)
	}()
	go func() {
		defer wg.Done()
		if err := s.grpc.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("grpc: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := serveHTTP(s.http, s.httpLn, s.httpTLS); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	if s.adminLn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serveHTTP(s.adminHTTP, s.adminLn, s.adminTLS); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin http: %w", err)
			}
		}()
	}
	if s.metricsLn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.metricsHTTP.Serve(s.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics http: %w", err)
			}
		}()
		s.log.Info("serving metrics", "addr", s.metricsLn.Addr().String(), "path", cmp.Or(s.cfg.HTTP.MetricsPath, DefaultMetricsPath))
	}
	s.log.Info("serving", "grpc", s.grpcLn.Addr().String(), "http", s.httpLn.Addr().String(),
		"admin", s.AdminAddr().String(), "grpc_tls", s.cfg.GRPC.TLS.Enabled(), "http_tls", s.httpTLS != nil,
		"admin_tls", s.adminTLS != nil || (s.adminLn == nil && s.httpTLS != nil))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		s.log.Error("server failed", "err", runErr)
	}

	s.draining.Store(true)
	s.health.Shutdown()
	s.log.Info("draining", "delay", s.cfg.Shutdown.DrainDelay.String())
	if runErr == nil && s.cfg.Shutdown.DrainDelay > 0 {
		t := time.NewTimer(s.cfg.Shutdown.DrainDelay)
		<-t.C
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Shutdown.Timeout)
	defer cancel()
	close(s.stopping) // ends health Watch streams, which would hold GracefulStop
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	if err := s.http.Shutdown(sctx); err != nil {
		s.log.Warn("http shutdown cut short", "err", err)
		s.http.Close()
	}
	if s.adminHTTP != nil {
		if err := s.adminHTTP.Shutdown(sctx); err != nil {
			s.log.Warn("admin http shutdown cut short", "err", err)
			s.adminHTTP.Close()
		}
	}
	if s.metricsHTTP != nil {
		if err := s.metricsHTTP.Shutdown(sctx); err != nil {
			s.metricsHTTP.Close()
		}
	}
	select {
	case <-stopped:
	case <-sctx.Done():
		s.log.Warn("grpc graceful stop timed out; closing connections")
		s.grpc.Stop()
		<-stopped
	}
	stopChecks()
	wg.Wait()
	s.log.Info("stopped")
	return runErr
}

// errNoLimits is Ready's answer before the first limits are loaded (over
// xDS: before the control plane's first good config).
var errNoLimits = errors.New("no limits loaded")

// Ready reports nil when the server can make decisions and is not
// draining: limits are loaded and every check that is not Optional last
// passed.
func (s *Server) Ready() error {
	if s.draining.Load() {
		return errors.New("draining")
	}
	return s.decidable()
}

// decidable reports nil when decisions can be made: limits are loaded and
// every required check last passed.
func (s *Server) decidable() error {
	if s.lim.Limits() == nil {
		return errNoLimits
	}
	for i := range s.checks {
		if s.checks[i].Optional || s.checks[i].WarnOnly {
			continue
		}
		r := s.results[i].Load()
		if r == nil {
			return errors.New(s.checks[i].Name + ": not checked yet")
		}
		if r.err != nil {
			return fmt.Errorf("%s: %w", s.checks[i].Name, r.err)
		}
	}
	return nil
}

// runChecks refreshes the cached check results and the gRPC health status
// until ctx ends.
func (s *Server) runChecks(ctx context.Context) {
	t := time.NewTicker(s.cfg.Health.CheckInterval)
	defer t.Stop()
	for {
		for i, c := range s.checks {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.Health.CheckTimeout)
			start := time.Now()
			err := c.Fn(cctx)
			lat := time.Since(start)
			cancel()
			if ctx.Err() != nil {
				return
			}
			s.metrics.BackendCheck(c.Name, err, lat)
			if c.Breaker != nil && !errors.Is(err, breaker.ErrOpen) {
				// The check is the breaker's recovery test, so it
				// recovers when no request needs the backend.
				c.Breaker.ReportCheck(err)
			}
			prev := s.results[i].Swap(&checkResult{err: err, at: time.Now(), latency: lat})
			switch {
			case err != nil && (prev == nil || prev.err == nil):
				s.log.Warn("backend check failing", "backend", c.Name, "optional", c.Optional, "err", err.Error())
			case err == nil && prev != nil && prev.err != nil:
				s.log.Info("backend check passing", "backend", c.Name, "latency", lat.String())
			}
		}
		s.refreshHealth()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RefreshHealth sets the gRPC health status from Ready now, for a change
// that makes the server ready or not between two checks: the first limits
// arriving over xDS.
func (s *Server) RefreshHealth() { s.refreshHealth() }

// refreshHealth sets the gRPC health status from Ready. After drain starts
// the health server ignores updates and stays NOT_SERVING.
func (s *Server) refreshHealth() {
	st := healthpb.HealthCheckResponse_SERVING
	if s.Ready() != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(ServiceName, st)
}

// RateLimitService is the gRPC service implementation, for callers that
// answer in process.
func (s *Server) RateLimitService() rlsv3.RateLimitServiceServer { return s.rls }

// healthService ends Watch streams when the server stops, after they have
// seen NOT_SERVING; otherwise a watching client would hold GracefulStop
// until the shutdown timeout.
type healthService struct {
	*health.Server
	stopping <-chan struct{}
}

func (h *healthService) Watch(in *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	return h.Server.Watch(in, watchStream{stream, ctx})
}

type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w watchStream) Context() context.Context { return w.ctx }
