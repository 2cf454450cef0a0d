package wire

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-rl/sluice/limiter"
)

// statusBlock holds the messages of one descriptor status, so a response
// allocates them together.
type statusBlock struct {
	status rlsv3.RateLimitResponse_DescriptorStatus
	limit  rlsv3.RateLimitResponse_RateLimit
	reset  durationpb.Duration
	mult   wrapperspb.UInt32Value
}

// Response holds a response message and room for its headers, allocated
// together.
type Response struct {
	Msg     rlsv3.RateLimitResponse
	hdrPtrs [4]*corev3.HeaderValue
	hdrs    [4]corev3.HeaderValue
}

// SetHeader sets header i (0 to 3) of the response; SetHeaders(n) then
// attaches the first n.
func (rb *Response) SetHeader(i int, key, value string) {
	rb.hdrs[i].Key, rb.hdrs[i].Value = key, value
	rb.hdrPtrs[i] = &rb.hdrs[i]
}

// SetHeaders attaches headers 0 to n-1 set by SetHeader (none for 0).
func (rb *Response) SetHeaders(n int) {
	if n > 0 {
		rb.Msg.ResponseHeadersToAdd = rb.hdrPtrs[:n:n]
	}
}

// NewResponse builds the RateLimitResponse message of resp, without
// headers. It allocates the response with room for its headers, and the
// statuses, one block each.
func NewResponse(resp *limiter.Response) *Response {
	sts := resp.Statuses
	rb := &Response{}
	out := &rb.Msg
	out.OverallCode = codeToProto(resp.Code)
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
	return rb
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

// Field numbers of the RateLimitResponse messages written below.
const (
	respOverallCode   = 1
	respStatuses      = 2
	respHeaders       = 3
	statusCode        = 1
	statusLimit       = 2
	statusRemaining   = 3
	statusReset       = 4
	limitRPU          = 1
	limitUnit         = 2
	limitName         = 3
	limitMultiplier   = 4
	headerKey         = 1
	headerValue       = 2
	durationSeconds   = 1
	durationNanos     = 2
	wrapperValueField = 1
)

// AppendResponse appends the encoding of NewResponse(resp) to b, field by
// field in field-number order as proto.Marshal writes it. Headers follow
// it, one AppendHeader each.
func AppendResponse(b []byte, resp *limiter.Response) []byte {
	b = appendVarintField(b, respOverallCode, uint64(codeToProto(resp.Code)))
	for i := range resp.Statuses {
		st := &resp.Statuses[i]
		b = protowire.AppendTag(b, respStatuses, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(statusSize(st)))
		b = appendStatus(b, st)
	}
	return b
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendStringField(b []byte, num protowire.Number, v string) []byte {
	if v == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

func varintFieldSize(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func stringFieldSize(v string) int {
	if v == "" {
		return 0
	}
	return 1 + protowire.SizeBytes(len(v))
}

func limitSize(l *limiter.RateLimit) int {
	n := varintFieldSize(uint64(l.RequestsPerUnit)) + varintFieldSize(uint64(unitToProto(l.Unit))) + stringFieldSize(l.Name)
	if l.UnitMultiplier > 1 {
		n += 1 + protowire.SizeBytes(varintFieldSize(uint64(l.UnitMultiplier)))
	}
	return n
}

func resetParts(us int64) (secs, nanos uint64) {
	return uint64(us / 1e6), uint64(int64(int32(us%1e6) * 1000))
}

func durationSize(us int64) int {
	secs, nanos := resetParts(us)
	return varintFieldSize(secs) + varintFieldSize(nanos)
}

func statusSize(st *limiter.Status) int {
	n := varintFieldSize(uint64(codeToProto(st.Code))) + varintFieldSize(uint64(st.Remaining))
	if l := st.Limit; l != nil {
		n += 1 + protowire.SizeBytes(limitSize(l))
		n += 1 + protowire.SizeBytes(durationSize(st.ResetMicros))
	}
	return n
}

func appendStatus(b []byte, st *limiter.Status) []byte {
	b = appendVarintField(b, statusCode, uint64(codeToProto(st.Code)))
	l := st.Limit
	if l != nil {
		b = protowire.AppendTag(b, statusLimit, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(limitSize(l)))
		b = appendVarintField(b, limitRPU, uint64(l.RequestsPerUnit))
		b = appendVarintField(b, limitUnit, uint64(unitToProto(l.Unit)))
		b = appendStringField(b, limitName, l.Name)
		if l.UnitMultiplier > 1 {
			b = protowire.AppendTag(b, limitMultiplier, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(varintFieldSize(uint64(l.UnitMultiplier))))
			b = appendVarintField(b, wrapperValueField, uint64(l.UnitMultiplier))
		}
	}
	b = appendVarintField(b, statusRemaining, uint64(st.Remaining))
	if l != nil {
		secs, nanos := resetParts(st.ResetMicros)
		b = protowire.AppendTag(b, statusReset, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(durationSize(st.ResetMicros)))
		b = appendVarintField(b, durationSeconds, secs)
		b = appendVarintField(b, durationNanos, nanos)
	}
	return b
}

// AppendHeader appends one response_headers_to_add entry, as
// NewResponse's caller sets them in HeaderValue form.
func AppendHeader(b []byte, key string, value []byte) []byte {
	n := stringFieldSize(key)
	if len(value) > 0 {
		n += 1 + protowire.SizeBytes(len(value))
	}
	b = protowire.AppendTag(b, respHeaders, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = appendStringField(b, headerKey, key)
	if len(value) > 0 {
		b = protowire.AppendTag(b, headerValue, protowire.BytesType)
		b = protowire.AppendBytes(b, value)
	}
	return b
}
