package server

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/server/internal/wire"
	"github.com/sluice-rl/sluice/server/metrics"
)

// rls answers ShouldRateLimit. It is shared by the gRPC service and the
// HTTP /json endpoint.
type rls struct {
	rlsv3.UnimplementedRateLimitServiceServer

	lim     *limiter.Limiter
	metrics *metrics.Metrics // nil: none
	tracer  trace.Tracer     // nil: tracing off (trace.go)
	headers HeaderConfig
	dynMeta bool // grpc.response_dynamic_metadata
	maxMsg  int
	bounds  limiter.Bounds // lim's, held to while decoding
	pool    sync.Pool      // *scratch; see put

	// The gRPC method's interceptor info, and the direct codec's handler
	// (codec.go).
	info          grpc.UnaryServerInfo
	directHandler grpc.UnaryHandler
}

func newRLS(lim *limiter.Limiter, cfg Config) *rls {
	r := &rls{lim: lim, headers: cfg.ResponseHeaders, dynMeta: cfg.GRPC.ResponseDynamicMetadata,
		maxMsg: cfg.GRPC.MaxRecvMsgBytes, bounds: limiter.DefaultBounds}
	if lim != nil {
		r.bounds = lim.Bounds()
	}
	r.pool.New = func() any { return new(scratch) }
	r.info = grpc.UnaryServerInfo{Server: r, FullMethod: shouldRateLimitFullMethod}
	r.directHandler = func(ctx context.Context, req any) (any, error) {
		return r.answerDirect(ctx, req.(*wire.Query).Owner.(*scratch))
	}
	return r
}

// scratch is one request's working set, reused across requests.
type scratch struct {
	in   wire.Request
	resp limiter.Response
	num  []byte

	// The direct codec's query and encoded answer (codec.go).
	query wire.Query
	out   []byte
}

// The largest scratch put back in the pool: a request with more
// descriptors, entries or answer bytes (possible only with bounds raised
// well over the defaults) leaves its scratch to the collector, so an
// outlier's grown slices are not kept for the life of the process.
const (
	keepDescriptors = 256
	keepEntries     = 4096
	keepBytes       = 64 << 10
)

// put returns s to the pool unless it grew past the keep sizes. It drops
// the request's strings first: on the gRPC path they point into the copy
// of the whole message.
func (r *rls) put(s *scratch) {
	if s.in.Outgrown(keepDescriptors, keepEntries) || cap(s.resp.Statuses) > keepDescriptors ||
		cap(s.out) > keepBytes || cap(s.num) > keepBytes {
		return
	}
	s.in.Release()
	s.query = wire.Query{}
	r.pool.Put(s)
}

// ShouldRateLimit implements rlsv3.RateLimitServiceServer.
func (r *rls) ShouldRateLimit(ctx context.Context, in *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "request: must not be empty")
	}
	if r.maxMsg > 0 {
		if err := r.checkSize(proto.Size(in)); err != nil {
			return nil, err
		}
	}
	return r.answer(ctx, in)
}

// answer decides in, whose size was checked, and builds the response.
func (r *rls) answer(ctx context.Context, in *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	s := r.pool.Get().(*scratch)
	defer r.put(s)
	s.in.FromProto(in)
	if err := r.decide(ctx, s); err != nil {
		return nil, grpcError(err)
	}
	return r.response(s), nil
}

// checkSize refuses a request message of n bytes over the bound.
func (r *rls) checkSize(n int) error {
	if r.maxMsg > 0 && n > r.maxMsg {
		return status.Error(codes.InvalidArgument, "message: "+strconv.Itoa(n)+
			" bytes, larger than the bound of "+strconv.Itoa(r.maxMsg))
	}
	return nil
}

// decide decides s.req into s.resp and counts the decision, inside a span
// when tracing is on.
func (r *rls) decide(ctx context.Context, s *scratch) error {
	if r.tracer != nil {
		return r.decideTraced(ctx, s)
	}
	return r.decidePlain(ctx, s)
}

func (r *rls) decidePlain(ctx context.Context, s *scratch) error {
	start := time.Now()
	if err := r.lim.Decide(ctx, &s.in.Req, &s.resp); err != nil {
		return err
	}
	r.metrics.ObserveDecision(r.lim.Limits(), &s.in.Req, &s.resp, time.Since(start))
	return nil
}

// response builds the RateLimitResponse from s.resp, with its headers.
func (r *rls) response(s *scratch) *rlsv3.RateLimitResponse {
	rb := wire.NewResponse(&s.resp)
	if r.headers.Enabled {
		r.setHeaders(rb, s)
	}
	if r.dynMeta {
		rb.Msg.DynamicMetadata = wire.StructOf(wire.DynamicMetadata(&s.in.Req, &s.resp))
	}
	return &rb.Msg
}

// grpcError maps a limiter error to a gRPC status; never codes.Unknown.
func grpcError(err error) error {
	var inv *limiter.InvalidRequestError
	switch {
	case errors.As(err, &inv):
		return status.Error(codes.InvalidArgument, inv.Error())
	case errors.Is(err, limiter.ErrNoLimits):
		return status.Error(codes.Unavailable, "no limits loaded")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return err
	}
	return status.Error(codes.Unavailable, "store: "+err.Error())
}
