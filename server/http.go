package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sluice-rl/sluice/limiter"
)

// Handler is the HTTP API: POST /json, GET /health/live, GET
// /health/ready, GET /health/detailed, GET /metrics (with Options.Metrics),
// GET /healthcheck (with http.healthcheck),
// and the admin routes under /admin/
// unless http.admin_addr gives them a listener of their own.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /json", s.handleJSON)
	mux.HandleFunc("GET /health/live", s.handleLive)
	mux.HandleFunc("GET /health/ready", s.handleReady)
	mux.HandleFunc("GET /health/detailed", s.handleDetailed)
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.metrics.Handler())
	}
	if s.cfg.HTTP.Healthcheck {
		mux.HandleFunc("GET /healthcheck", s.handleHealthcheck)
	}
	if s.cfg.HTTP.AdminAddr == "" {
		mux.Handle("/admin/", s.adminHandler())
	}
	return mux
}

func (s *Server) handleLive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n") // best effort: the client may be gone
}

func (s *Server) handleReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.Ready(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "not ready: "+err.Error()+"\n")
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// handleHealthcheck answers GET /healthcheck as envoyproxy/ratelimit
// does, for probes written against it: 200 with the body "OK" while the
// server is ready (as /health/ready), else 500 with no body; but 503
// before any limits are loaded (waiting for the first xDS config), when
// the service is not failing but has nothing to serve yet.
func (s *Server) handleHealthcheck(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if err := s.Ready(); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, errNoLimits) {
			code = http.StatusServiceUnavailable
		}
		w.WriteHeader(code)
		return
	}
	_, _ = io.WriteString(w, "OK") // a failed write is the client gone
}

var (
	jsonIn  = protojson.UnmarshalOptions{}
	jsonOut = protojson.MarshalOptions{UseProtoNames: true}
)

// handleJSON answers a protojson RateLimitRequest with a protojson
// RateLimitResponse: 200 when allowed, 429 with Retry-After when over
// limit, 400 for a bad request, 413 for a body over http.max_body_bytes,
// 503 when no decision can be made.
func (s *Server) handleJSON(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, s.cfg.HTTP.MaxBodyBytes)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body: larger than the bound of "+
				strconv.FormatInt(tooBig.Limit, 10)+" bytes")
			return
		}
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	// Count descriptors and entries before protojson makes a message of
	// each: a body of empty descriptors over the bounds costs no more than
	// its bytes.
	if err := scanJSONRequest(body, &s.rls.bounds); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var req rlsv3.RateLimitRequest
	if err := jsonIn.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	sc := s.rls.pool.Get().(*scratch)
	defer s.rls.put(sc)
	sc.in.FromProto(&req)
	if err := s.rls.decide(s.rls.withHTTPTraceContext(r.Context(), r.Header), sc); err != nil {
		st := status.Convert(grpcError(err))
		code := http.StatusServiceUnavailable
		switch st.Code() {
		case codes.InvalidArgument:
			code = http.StatusBadRequest
		case codes.Canceled, codes.DeadlineExceeded:
			code = http.StatusGatewayTimeout
		}
		writeError(w, code, st.Message())
		return
	}
	resp := s.rls.response(sc)
	out, err := jsonOut.Marshal(resp)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	h := headerInfoOf(&sc.resp)
	if h.ok && s.cfg.ResponseHeaders.Enabled {
		sc.num = h.limitValue(sc.num[:0])
		hdr.Set(s.cfg.ResponseHeaders.Limit, string(sc.num))
		hdr.Set(s.cfg.ResponseHeaders.Remaining, strconv.FormatUint(uint64(h.remaining), 10))
		hdr.Set(s.cfg.ResponseHeaders.Reset, strconv.FormatInt(h.resetSecs, 10))
	}
	code := http.StatusOK
	if sc.resp.Code == limiter.OverLimit {
		code = http.StatusTooManyRequests
		if h.retrySecs >= 0 {
			hdr.Set("Retry-After", strconv.FormatInt(h.retrySecs, 10))
		}
	}
	w.WriteHeader(code)
	w.Write(out)
}

// readBody reads a body of at most max bytes, into one buffer of its
// Content-Length when it gives one.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	rd := http.MaxBytesReader(w, r.Body, max)
	n := r.ContentLength
	if n < 0 || n > max {
		return io.ReadAll(rd)
	}
	// One byte more than announced, to read to the end.
	b := make([]byte, n+1)
	k, err := io.ReadFull(rd, b)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return b[:k], nil
	case err != nil:
		return nil, err
	}
	rest, err := io.ReadAll(rd)
	return append(b, rest...), err
}

// writeError writes {"error": msg} with the status code.
func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct { // best effort: the client may be gone
		Error string `json:"error"`
	}{msg})
}
