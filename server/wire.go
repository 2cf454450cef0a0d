package server

import (
	"context"
	"errors"
	"strconv"
	"unicode/utf8"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sluice-rl/sluice/limiter"
)

// The gRPC ShouldRateLimit path reads a RateLimitRequest's protobuf
// encoding straight into a scratch and writes the RateLimitResponse's
// encoding straight from the decision, so a call allocates no protobuf
// messages. The decoding follows the protobuf runtime's rules exactly
// (wire-type mismatches read as unknown fields, the last scalar wins,
// repeated occurrences of a message field merge, strings must be UTF-8);
// FuzzWireRequest holds it to proto.Unmarshal followed by translate, and
// TestWireResponse holds the encoding to proto.Marshal of response.

// rlsServiceDesc is the generated service descriptor with ShouldRateLimit
// served by shouldRateLimitWire. Interceptors see a *wireQuery as the
// request and the encoded answer ([]byte) as the response; the request
// lives in a pooled scratch that is reused once the handler returns, so an
// interceptor must not keep it or read it after calling the handler from
// another goroutine.
var rlsServiceDesc = func() grpc.ServiceDesc {
	d := rlsv3.RateLimitService_ServiceDesc
	d.Methods = []grpc.MethodDesc{{MethodName: "ShouldRateLimit", Handler: shouldRateLimitWire}}
	return d
}()

// shouldRateLimitFullMethod names the method for interceptors.
var shouldRateLimitFullMethod = rlsv3.RateLimitService_ShouldRateLimit_FullMethodName

// wireQuery is what the codec decodes a ShouldRateLimit request into.
type wireQuery struct {
	s      *scratch
	size   int             // bytes of the encoded request
	bounds *limiter.Bounds // held to while decoding
	// err is the bound the request broke, found while decoding: the
	// codec's own errors reach the client as INTERNAL, this one is
	// answered INVALID_ARGUMENT by the handler.
	err error
}

func shouldRateLimitWire(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	r := srv.(*rls)
	s := r.pool.Get().(*scratch)
	defer r.put(s)
	s.query.s, s.query.bounds = s, &r.bounds
	if err := dec(&s.query); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return r.answerWire(ctx, &s.query)
	}
	return interceptor(ctx, &s.query, &r.info, r.wireHandler)
}

// answerWire decides a decoded request and encodes the answer.
func (r *rls) answerWire(ctx context.Context, q *wireQuery) (any, error) {
	if err := r.checkSize(q.size); err != nil {
		return nil, err
	}
	if q.err != nil {
		return nil, status.Error(codes.InvalidArgument, q.err.Error())
	}
	s := q.s
	if err := r.decide(ctx, s); err != nil {
		return nil, grpcError(err)
	}
	// The answer is sent after the handler returns, and s goes back to
	// the pool when it does: copy it out of s.
	s.out = r.appendResponse(s.out[:0], s)
	ans := make([]byte, len(s.out))
	copy(ans, s.out)
	return ans, nil
}

// wireCodec is the server's codec: protobuf for every message, with
// ShouldRateLimit's request and answer handled by this file. A plain
// []byte is an answer already encoded (no protobuf message is one), and
// gRPC's binary log records it as the payload.
type wireCodec struct{ proto encoding.CodecV2 }

func newWireCodec() wireCodec { return wireCodec{proto: encoding.GetCodecV2(proto.Name)} }

func (wireCodec) Name() string { return proto.Name }

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if a, ok := v.([]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(a)}, nil
	}
	return c.proto.Marshal(v)
}

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	q, ok := v.(*wireQuery)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	q.size, q.err = data.Len(), nil
	var err error
	if len(data) == 1 {
		err = q.s.parse(data[0].ReadOnlyData(), q.bounds)
	} else {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		err = q.s.parse(buf.ReadOnlyData(), q.bounds)
		buf.Free()
	}
	if inv := (*limiter.InvalidRequestError)(nil); errors.As(err, &inv) {
		q.err = inv
		return nil
	}
	return err
}

// errWire is returned for bytes that are not a RateLimitRequest; the
// protobuf runtime gives the same cases no more detail. Like any codec
// error (and as for the library's messages), gRPC answers it INTERNAL
// ("error parsing request proto" in its status-code table).
var errWire = errors.New("malformed protobuf")

// wireError names the field whose bytes could not be read.
func wireError(field string, err error) error {
	return errors.New("RateLimitRequest." + field + ": " + err.Error())
}

var errUTF8 = errors.New("string field contains invalid UTF-8")

// wireMsg steps through the fields of one encoded message.
type wireMsg struct {
	b   []byte
	off int // of b[0] in the whole request
}

// next reads the next field's tag. It reports false at the end.
func (m *wireMsg) next() (protowire.Number, protowire.Type, bool, error) {
	if len(m.b) == 0 {
		return 0, 0, false, nil
	}
	num, typ, n := protowire.ConsumeTag(m.b)
	if n < 0 || num > protowire.MaxValidNumber {
		return 0, 0, false, errWire
	}
	m.advance(n)
	return num, typ, true, nil
}

func (m *wireMsg) advance(n int) { m.b, m.off = m.b[n:], m.off+n }

// skip passes over a field this decoder does not read.
func (m *wireMsg) skip(num protowire.Number, typ protowire.Type) error {
	n := protowire.ConsumeFieldValue(num, typ, m.b)
	if n < 0 {
		return errWire
	}
	m.advance(n)
	return nil
}

func (m *wireMsg) varint() (uint64, error) {
	v, n := protowire.ConsumeVarint(m.b)
	if n < 0 {
		return 0, errWire
	}
	m.advance(n)
	return v, nil
}

// bytes reads a length-delimited field as a message of its own.
func (m *wireMsg) bytes() (wireMsg, error) {
	v, n := protowire.ConsumeBytes(m.b)
	if n < 0 {
		return wireMsg{}, errWire
	}
	sub := wireMsg{b: v, off: m.off + n - len(v)}
	m.advance(n)
	return sub, nil
}

// text reads a string field, cut from the request's copy in src.
func (m *wireMsg) text(src string) (string, error) {
	v, err := m.bytes()
	if err != nil {
		return "", err
	}
	if !utf8.Valid(v.b) {
		return "", errUTF8
	}
	return src[v.off : v.off+len(v.b)], nil
}

// parse fills s.req from an encoded RateLimitRequest, as translate does
// from a decoded one. The request's strings share one copy of b. It stops
// at the first descriptor, entry, key or value over bd, as scanRequest
// does, with the same *limiter.InvalidRequestError, so the scratch never
// grows past the bounds.
func (s *scratch) parse(b []byte, bd *limiter.Bounds) error {
	s.entries, s.overrides, s.spans, s.ovr = s.entries[:0], s.overrides[:0], s.spans[:0], s.ovr[:0]
	s.req.Domain, s.req.HitsAddend = "", 0
	s.req.Descriptors = s.req.Descriptors[:0]
	var src string
	if len(b) > 0 {
		src = string(b)
	}
	m := wireMsg{b: b}
	for {
		num, typ, ok, err := m.next()
		if err != nil {
			return wireError("tag", err)
		}
		if !ok {
			break
		}
		switch {
		case num == 1 && typ == protowire.BytesType:
			if s.req.Domain, err = m.text(src); err != nil {
				return wireError("domain", err)
			}
		case num == 2 && typ == protowire.BytesType:
			i := len(s.req.Descriptors)
			d, err := m.bytes()
			if err == nil && i == bd.MaxDescriptors {
				return tooManyDescriptors(bd.MaxDescriptors)
			}
			if err == nil {
				err = s.parseDescriptor(d, src, bd, i)
			}
			if inv := (*limiter.InvalidRequestError)(nil); errors.As(err, &inv) {
				return err
			}
			if err != nil {
				return wireError("descriptors["+strconv.Itoa(i)+"]", err)
			}
		case num == 3 && typ == protowire.VarintType:
			v, err := m.varint()
			if err != nil {
				return wireError("hits_addend", err)
			}
			s.req.HitsAddend = uint64(uint32(v))
		default:
			if err := m.skip(num, typ); err != nil {
				return wireError("field "+strconv.Itoa(int(num)), err)
			}
		}
	}
	// Point into entries and overrides only now: appending may have moved them.
	for i := range s.req.Descriptors {
		sp := s.spans[i]
		d := &s.req.Descriptors[i]
		d.Entries = s.entries[sp[0]:sp[1]:sp[1]]
		if o := s.ovr[i]; o >= 0 {
			d.Override = &s.overrides[o]
		}
	}
	return nil
}

// parseDescriptor appends RateLimitDescriptor i.
func (s *scratch) parseDescriptor(m wireMsg, src string, bd *limiter.Bounds, i int) error {
	s.req.Descriptors = append(s.req.Descriptors, limiter.Descriptor{})
	d := &s.req.Descriptors[len(s.req.Descriptors)-1]
	start, ovr := len(s.entries), -1
	for {
		num, typ, ok, err := m.next()
		if err != nil || !ok {
			s.spans = append(s.spans, [2]int{start, len(s.entries)})
			s.ovr = append(s.ovr, ovr)
			return err
		}
		switch {
		case num == 1 && typ == protowire.BytesType:
			e, err := m.bytes()
			j := len(s.entries) - start
			if err == nil && j == bd.MaxEntries {
				return tooManyEntries(i, bd.MaxEntries)
			}
			if err == nil {
				err = s.parseEntry(e, src, bd, i, j)
			}
			if err != nil {
				return err
			}
		case num == 2 && typ == protowire.BytesType:
			o, err := m.bytes()
			if err != nil {
				return err
			}
			if ovr < 0 {
				ovr = len(s.overrides)
				s.overrides = append(s.overrides, limiter.RateLimit{})
			}
			if err := parseLimitOverride(o, &s.overrides[ovr]); err != nil {
				return err
			}
		case num == 3 && typ == protowire.BytesType:
			h, err := m.bytes()
			if err != nil {
				return err
			}
			d.HasCost = true
			if err := parseWrapped(h, &d.Cost); err != nil {
				return err
			}
		case num == 4 && typ == protowire.VarintType:
			v, err := m.varint()
			if err != nil {
				return err
			}
			d.Refund = v != 0
		default:
			if err := m.skip(num, typ); err != nil {
				return err
			}
		}
	}
}

// parseEntry appends entry j of descriptor i.
func (s *scratch) parseEntry(m wireMsg, src string, bd *limiter.Bounds, i, j int) error {
	var e limiter.Entry
	for {
		num, typ, ok, err := m.next()
		if err != nil {
			return err
		}
		if !ok {
			if err := checkEntry(bd, i, j, len(e.Key), len(e.Value)); err != nil {
				return err
			}
			s.entries = append(s.entries, e)
			return nil
		}
		switch {
		case num == 1 && typ == protowire.BytesType:
			e.Key, err = m.text(src)
		case num == 2 && typ == protowire.BytesType:
			e.Value, err = m.text(src)
		default:
			err = m.skip(num, typ)
		}
		if err != nil {
			return err
		}
	}
}

// parseLimitOverride merges a RateLimitOverride into o.
func parseLimitOverride(m wireMsg, o *limiter.RateLimit) error {
	for {
		num, typ, ok, err := m.next()
		if err != nil || !ok {
			return err
		}
		switch {
		case num == 1 && typ == protowire.VarintType:
			var v uint64
			v, err = m.varint()
			o.RequestsPerUnit = uint32(v)
		case num == 2 && typ == protowire.VarintType:
			var v uint64
			v, err = m.varint()
			o.Unit = unitFromProto(typev3.RateLimitUnit(int32(v)))
		case num == 3 && typ == protowire.BytesType:
			var w wireMsg
			if w, err = m.bytes(); err == nil {
				v := uint64(o.UnitMultiplier)
				err = parseWrapped(w, &v)
				o.UnitMultiplier = uint32(v)
			}
		default:
			err = m.skip(num, typ)
		}
		if err != nil {
			return err
		}
	}
}

// parseWrapped merges a UInt64Value or UInt32Value (field 1) into v; a
// UInt32Value's caller truncates.
func parseWrapped(m wireMsg, v *uint64) error {
	for {
		num, typ, ok, err := m.next()
		if err != nil || !ok {
			return err
		}
		if num == 1 && typ == protowire.VarintType {
			*v, err = m.varint()
		} else {
			err = m.skip(num, typ)
		}
		if err != nil {
			return err
		}
	}
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

// appendResponse appends the encoding of response(s) to b, field by field
// in field-number order as proto.Marshal writes it.
func (r *rls) appendResponse(b []byte, s *scratch) []byte {
	b = appendVarintField(b, respOverallCode, uint64(codeToProto(s.resp.Code)))
	for i := range s.resp.Statuses {
		st := &s.resp.Statuses[i]
		b = protowire.AppendTag(b, respStatuses, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(statusSize(st)))
		b = appendStatus(b, st)
	}
	if r.headers.Enabled {
		b = r.appendWireHeaders(b, s)
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

// appendWireHeaders appends the rate-limit headers, as appendHeaders
// builds them.
func (r *rls) appendWireHeaders(b []byte, s *scratch) []byte {
	n, keys, ends := r.rateLimitHeaders(s)
	from := 0
	for i := 0; i < n; i++ {
		b = appendHeader(b, keys[i], s.num[from:ends[i]])
		from = ends[i]
	}
	return b
}

func appendHeader(b []byte, key string, value []byte) []byte {
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
