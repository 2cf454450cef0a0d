package server

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/server/metrics"
)

// rls answers ShouldRateLimit. It is shared by the gRPC service and the
// HTTP /json endpoint.
type rls struct {
	rlsv3.UnimplementedRateLimitServiceServer

	lim     *limiter.Limiter
	metrics *metrics.Metrics // nil: none
	headers HeaderConfig
	maxMsg  int
	bounds  limiter.Bounds // lim's, held to while decoding
	pool    sync.Pool      // *scratch; see put

	// The gRPC method's interceptor info and handler (wire.go).
	info        grpc.UnaryServerInfo
	wireHandler grpc.UnaryHandler
}

func newRLS(lim *limiter.Limiter, cfg Config) *rls {
	r := &rls{lim: lim, headers: cfg.ResponseHeaders, maxMsg: cfg.GRPC.MaxRecvMsgBytes, bounds: limiter.DefaultBounds}
	if lim != nil {
		r.bounds = lim.Bounds()
	}
	r.pool.New = func() any { return new(scratch) }
	r.info = grpc.UnaryServerInfo{Server: r, FullMethod: shouldRateLimitFullMethod}
	r.wireHandler = func(ctx context.Context, req any) (any, error) {
		return r.answerWire(ctx, req.(*wireQuery))
	}
	return r
}

// scratch is one request's working set, reused across requests.
type scratch struct {
	req       limiter.Request
	resp      limiter.Response
	entries   []limiter.Entry
	spans     [][2]int
	overrides []limiter.RateLimit
	num       []byte

	// The gRPC path's decoding and encoding (wire.go).
	query wireQuery
	ovr   []int // per descriptor: its index in overrides, or -1
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
	if cap(s.req.Descriptors) > keepDescriptors || cap(s.spans) > keepDescriptors ||
		cap(s.ovr) > keepDescriptors || cap(s.overrides) > keepDescriptors ||
		cap(s.resp.Statuses) > keepDescriptors || cap(s.entries) > keepEntries ||
		cap(s.out) > keepBytes || cap(s.num) > keepBytes {
		return
	}
	clear(s.entries)
	s.req.Domain = ""
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
	s := r.pool.Get().(*scratch)
	defer r.put(s)
	s.translate(in)
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

// decide decides s.req into s.resp and counts the decision.
func (r *rls) decide(ctx context.Context, s *scratch) error {
	start := time.Now()
	if err := r.lim.Decide(ctx, &s.req, &s.resp); err != nil {
		return err
	}
	r.metrics.ObserveDecision(r.lim.Limits(), &s.req, &s.resp, time.Since(start))
	return nil
}

// translate fills s.req from in. Nil descriptors and entries read as empty
// ones, which Validate then rejects by name.
func (s *scratch) translate(in *rlsv3.RateLimitRequest) {
	descs := in.GetDescriptors()
	n := len(descs)
	total := 0
	for _, d := range descs {
		total += len(d.GetEntries())
	}
	if cap(s.entries) < total {
		s.entries = make([]limiter.Entry, 0, total)
	}
	if cap(s.overrides) < n {
		s.overrides = make([]limiter.RateLimit, 0, n)
	}
	if cap(s.req.Descriptors) < n {
		s.req.Descriptors = make([]limiter.Descriptor, n)
	}
	s.entries, s.overrides, s.spans = s.entries[:0], s.overrides[:0], s.spans[:0]
	s.req.Domain = in.GetDomain()
	s.req.HitsAddend = uint64(in.GetHitsAddend())
	s.req.Descriptors = s.req.Descriptors[:n]
	for i, d := range descs {
		start := len(s.entries)
		for _, e := range d.GetEntries() {
			s.entries = append(s.entries, limiter.Entry{Key: e.GetKey(), Value: e.GetValue()})
		}
		ld := &s.req.Descriptors[i]
		*ld = limiter.Descriptor{Refund: d.GetIsNegativeHits()}
		if h := d.GetHitsAddend(); h != nil {
			ld.Cost, ld.HasCost = h.GetValue(), true
		}
		if o := d.GetLimit(); o != nil {
			s.overrides = append(s.overrides, limiter.RateLimit{
				RequestsPerUnit: o.GetRequestsPerUnit(),
				Unit:            unitFromProto(o.GetUnit()),
				UnitMultiplier:  o.GetUnitMultiplier().GetValue(),
			})
			ld.Override = &s.overrides[len(s.overrides)-1]
		}
		s.spans = append(s.spans, [2]int{start, len(s.entries)})
	}
	// Slice the entries only now: appending above may have moved them.
	for i := range s.req.Descriptors {
		sp := s.spans[i]
		s.req.Descriptors[i].Entries = s.entries[sp[0]:sp[1]:sp[1]]
	}
}

func unitFromProto(u typev3.RateLimitUnit) limiter.Unit {
	switch u {
	case typev3.RateLimitUnit_SECOND:
		return limiter.Second
	case typev3.RateLimitUnit_MINUTE:
		return limiter.Minute
	case typev3.RateLimitUnit_HOUR:
		return limiter.Hour
	case typev3.RateLimitUnit_DAY:
		return limiter.Day
	case typev3.RateLimitUnit_MONTH:
		return limiter.Month
	case typev3.RateLimitUnit_YEAR:
		return limiter.Year
	}
	return limiter.UnitUnknown
}

func unitToProto(u limiter.Unit) rlsv3.RateLimitResponse_RateLimit_Unit {
	switch u {
	case limiter.Second:
		return rlsv3.RateLimitResponse_RateLimit_SECOND
	case limiter.Minute:
		return rlsv3.RateLimitResponse_RateLimit_MINUTE
	case limiter.Hour:
		return rlsv3.RateLimitResponse_RateLimit_HOUR
	case limiter.Day:
		return rlsv3.RateLimitResponse_RateLimit_DAY
	case limiter.Week:
		return rlsv3.RateLimitResponse_RateLimit_WEEK
	case limiter.Month:
		return rlsv3.RateLimitResponse_RateLimit_MONTH
	case limiter.Year:
		return rlsv3.RateLimitResponse_RateLimit_YEAR
	}
	return rlsv3.RateLimitResponse_RateLimit_UNKNOWN
}

func codeToProto(c limiter.Code) rlsv3.RateLimitResponse_Code {
	if c == limiter.OverLimit {
		return rlsv3.RateLimitResponse_OVER_LIMIT
	}
	return rlsv3.RateLimitResponse_OK
}

// statusBlock holds the messages of one descriptor status, so a response
// allocates them together.
type statusBlock struct {
	status rlsv3.RateLimitResponse_DescriptorStatus
	limit  rlsv3.RateLimitResponse_RateLimit
	reset  durationpb.Duration
	mult   wrapperspb.UInt32Value
}

// responseBlock holds a response and room for its headers.
type responseBlock struct {
	resp    rlsv3.RateLimitResponse
	hdrPtrs [4]*corev3.HeaderValue
	hdrs    [4]corev3.HeaderValue
}

// response builds the RateLimitResponse from s.resp. It allocates the
// response with its headers, and the statuses, one block each.
func (r *rls) response(s *scratch) *rlsv3.RateLimitResponse {
	sts := s.resp.Statuses
	rb := &responseBlock{}
	out := &rb.resp
	out.OverallCode = codeToProto(s.resp.Code)
	blocks := make([]statusBlock, len(sts))
	ptrs := make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(sts))
	for i := range sts {
		st := &sts[i]
		b := &blocks[i]
		v := &b.status
		v.Code = codeToProto(st.Code)
		v.LimitRemaining = st.Remaining
		if l := st.Limit; l != nil {
			cl := &b.limit
			cl.Name = l.Name
			cl.RequestsPerUnit = l.RequestsPerUnit
			cl.Unit = unitToProto(l.Unit)
			if l.UnitMultiplier > 1 {
				b.mult.Value = l.UnitMultiplier
				cl.UnitMultiplier = &b.mult
			}
			v.CurrentLimit = cl
			b.reset.Seconds = st.ResetMicros / 1e6
			b.reset.Nanos = int32(st.ResetMicros%1e6) * 1000
			v.DurationUntilReset = &b.reset
		}
		ptrs[i] = v
	}
	out.Statuses = ptrs
	if r.headers.Enabled {
		out.ResponseHeadersToAdd = r.appendHeaders(rb, s)
	}
	return out
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
