package server

import (
	"context"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-rl/sluice/server/internal/wire"
)

// The gRPC ShouldRateLimit path comes in two forms, chosen by grpc.codec;
// both decode with wire.Codec, so a request is held to the bounds while it
// is read either way, and a broken bound is answered INVALID_ARGUMENT.
//
//   - "grpc": the protobuf runtime decodes the request (after wire's
//     bounded pre-scan) and encodes the answer; interceptors see the
//     *rlsv3.RateLimitRequest and *rlsv3.RateLimitResponse messages.
//   - "direct": wire reads the request's bytes straight into a pooled
//     scratch and writes the answer's bytes straight from the decision, so
//     a call allocates no protobuf messages. Interceptors see a *wire.Query
//     as the request and the encoded answer ([]byte) as the response; the
//     query lives in the scratch, reused once the handler returns, so an
//     interceptor must not keep it or read it after calling the handler
//     from another goroutine.
//
// Both install wire.Codec with grpc.ForceServerCodecV2 (experimental in
// gRPC-Go): the pre-scan must run before proto.Unmarshal, and gRPC answers
// any codec error INTERNAL, so the codec hands the broken bound to the
// handler in a wire.Checked rather than failing.

// Codec names, the values of grpc.codec.
const (
	CodecGRPC   = "grpc"
	CodecDirect = "direct"
)

// DefaultCodec is grpc.codec unless configured; docs/performance.md has
// the measurement behind it.
const DefaultCodec = CodecDirect

// serviceDesc is the generated service descriptor with ShouldRateLimit
// served by the handler of codec.
func serviceDesc(codec string) *grpc.ServiceDesc {
	d := rlsv3.RateLimitService_ServiceDesc
	h := shouldRateLimitChecked
	if codec == CodecDirect {
		h = shouldRateLimitDirect
	}
	d.Methods = []grpc.MethodDesc{{MethodName: "ShouldRateLimit", Handler: h}}
	return &d
}

// shouldRateLimitFullMethod names the method for interceptors.
var shouldRateLimitFullMethod = rlsv3.RateLimitService_ShouldRateLimit_FullMethodName

func shouldRateLimitChecked(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	r := srv.(*rls)
	q := wire.Checked{Msg: new(rlsv3.RateLimitRequest), Bounds: &r.bounds}
	if err := dec(&q); err != nil {
		return nil, err
	}
	handler := func(ctx context.Context, req any) (any, error) {
		if err := r.checkSize(q.Size); err != nil {
			return nil, err
		}
		if q.Err != nil {
			return nil, status.Error(codes.InvalidArgument, q.Err.Error())
		}
		in, ok := req.(*rlsv3.RateLimitRequest)
		if !ok || in == nil {
			return nil, status.Error(codes.InvalidArgument, "request: must not be empty")
		}
		return r.answer(ctx, in) // its size was checked as received, above
	}
	if interceptor == nil {
		return handler(ctx, q.Msg)
	}
	return interceptor(ctx, q.Msg, &r.info, handler)
}

func shouldRateLimitDirect(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	r := srv.(*rls)
	s := r.pool.Get().(*scratch)
	defer r.put(s)
	s.query = wire.Query{Req: &s.in, Bounds: &r.bounds, Owner: s}
	if err := dec(&s.query); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return r.answerDirect(ctx, s)
	}
	return interceptor(ctx, &s.query, &r.info, r.directHandler)
}

// answerDirect decides a decoded request and encodes the answer.
func (r *rls) answerDirect(ctx context.Context, s *scratch) (any, error) {
	if err := r.checkSize(s.query.Size); err != nil {
		return nil, err
	}
	if s.query.Err != nil {
		return nil, status.Error(codes.InvalidArgument, s.query.Err.Error())
	}
	if err := r.decide(ctx, s); err != nil {
		return nil, grpcError(err)
	}
	s.out = wire.AppendResponse(s.out[:0], &s.resp)
	if r.headers.Enabled {
		n, keys, ends := r.rateLimitHeaders(s)
		from := 0
		for i := range n {
			s.out = wire.AppendHeader(s.out, keys[i], s.num[from:ends[i]])
			from = ends[i]
		}
	}
	if r.dynMeta {
		var err error
		if s.out, err = wire.AppendDynamicMetadata(s.out, wire.DynamicMetadata(&s.in.Req, &s.resp)); err != nil {
			// As the grpc codec answers a response it cannot marshal.
			return nil, status.Errorf(codes.Internal, "dynamic metadata: %v", err)
		}
	}
	// The answer is sent after the handler returns, and s goes back to
	// the pool when it does: copy it out of s.
	ans := make([]byte, len(s.out))
	copy(ans, s.out)
	return ans, nil
}
