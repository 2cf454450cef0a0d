// Package wire translates between Envoy's RateLimitService protobuf
// messages and the limiter's types, for the server's gRPC edge: through the
// protobuf runtime (FromProto, NewResponse, UnmarshalRequest), and, for
// ShouldRateLimit, straight between the encoded bytes and the limiter's
// types (Request.Parse, AppendResponse), which allocates no protobuf
// messages. Codec installs either on a gRPC server.
//
// The direct path is hand-made protocol code: it follows the protobuf
// runtime's rules exactly (wire-type mismatches read as unknown fields, the
// last scalar wins, repeated occurrences of a message field merge, strings
// must be UTF-8), FuzzWireRequest holds Parse to proto.Unmarshal followed
// by FromProto, and TestWireResponse holds AppendResponse to proto.Marshal
// of NewResponse. docs/performance.md records what it saves and when it is
// the default.
//
// Every decoder here holds a request to the limiter's bounds while it
// reads, not after: it stops at the first descriptor, entry, key or value
// over its bound, so a request costs memory in proportion to its size
// whatever it holds. It imports no gRPC server code and nothing of the
// server package.
package wire

import (
	"errors"
	"strconv"
	"unicode/utf8"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sluice-rl/sluice/limiter"
)

// Request is one request's decoded form and the slices behind it, reused
// across requests. Req is valid until the next Parse, FromProto or Release.
type Request struct {
	Req       limiter.Request
	entries   []limiter.Entry
	spans     [][2]int
	overrides []limiter.RateLimit
	ovr       []int // per descriptor: its index in overrides, or -1
}

// Outgrown reports whether s holds room for more than descriptors
// descriptors or entries entries: a pool should drop it, so an outlier's
// grown slices are not kept for the life of the process.
func (s *Request) Outgrown(descriptors, entries int) bool {
	return cap(s.Req.Descriptors) > descriptors || cap(s.spans) > descriptors ||
		cap(s.ovr) > descriptors || cap(s.overrides) > descriptors || cap(s.entries) > entries
}

// Release drops the request's strings, which on the direct path point into
// the copy of the whole message, so a pooled Request does not keep it.
func (s *Request) Release() {
	clear(s.entries)
	s.Req.Domain = ""
}

// FromProto fills s.Req from in. Nil descriptors and entries read as empty
// ones, which Validate then rejects by name. in should have been decoded
// with UnmarshalRequest, which holds it to the bounds.
func (s *Request) FromProto(in *rlsv3.RateLimitRequest) {
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
	if cap(s.Req.Descriptors) < n {
		s.Req.Descriptors = make([]limiter.Descriptor, n)
	}
	s.entries, s.overrides, s.spans = s.entries[:0], s.overrides[:0], s.spans[:0]
	s.Req.Domain = in.GetDomain()
	s.Req.HitsAddend = uint64(in.GetHitsAddend())
	s.Req.Descriptors = s.Req.Descriptors[:n]
	for i, d := range descs {
		start := len(s.entries)
		for _, e := range d.GetEntries() {
			s.entries = append(s.entries, limiter.Entry{Key: e.GetKey(), Value: e.GetValue()})
		}
		ld := &s.Req.Descriptors[i]
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
	for i := range s.Req.Descriptors {
		sp := s.spans[i]
		s.Req.Descriptors[i].Entries = s.entries[sp[0]:sp[1]:sp[1]]
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

// ErrMalformed is returned for bytes that are not a RateLimitRequest; the
// protobuf runtime gives the same cases no more detail. Like any codec
// error (and as for the library's messages), gRPC answers it INTERNAL
// ("error parsing request proto" in its status-code table).
var ErrMalformed = errors.New("malformed protobuf")

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
		return 0, 0, false, ErrMalformed
	}
	m.advance(n)
	return num, typ, true, nil
}

func (m *wireMsg) advance(n int) { m.b, m.off = m.b[n:], m.off+n }

// skip passes over a field this decoder does not read.
func (m *wireMsg) skip(num protowire.Number, typ protowire.Type) error {
	n := protowire.ConsumeFieldValue(num, typ, m.b)
	if n < 0 {
		return ErrMalformed
	}
	m.advance(n)
	return nil
}

func (m *wireMsg) varint() (uint64, error) {
	v, n := protowire.ConsumeVarint(m.b)
	if n < 0 {
		return 0, ErrMalformed
	}
	m.advance(n)
	return v, nil
}

// bytes reads a length-delimited field as a message of its own.
func (m *wireMsg) bytes() (wireMsg, error) {
	v, n := protowire.ConsumeBytes(m.b)
	if n < 0 {
		return wireMsg{}, ErrMalformed
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

// Parse fills s.Req from an encoded RateLimitRequest, as FromProto does
// from a decoded one. The request's strings share one copy of b. It stops
// at the first descriptor, entry, key or value over bd, as ScanRequest
// does, with the same *limiter.InvalidRequestError, so the scratch never
// grows past the bounds.
func (s *Request) Parse(b []byte, bd *limiter.Bounds) error {
	s.entries, s.overrides, s.spans, s.ovr = s.entries[:0], s.overrides[:0], s.spans[:0], s.ovr[:0]
	s.Req.Domain, s.Req.HitsAddend = "", 0
	s.Req.Descriptors = s.Req.Descriptors[:0]
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
			if s.Req.Domain, err = m.text(src); err != nil {
				return wireError("domain", err)
			}
		case num == 2 && typ == protowire.BytesType:
			i := len(s.Req.Descriptors)
			d, err := m.bytes()
			if err == nil && i == bd.MaxDescriptors {
				return TooManyDescriptors(bd.MaxDescriptors)
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
			s.Req.HitsAddend = uint64(uint32(v))
		default:
			if err := m.skip(num, typ); err != nil {
				return wireError("field "+strconv.Itoa(int(num)), err)
			}
		}
	}
	// Point into entries and overrides only now: appending may have moved them.
	for i := range s.Req.Descriptors {
		sp := s.spans[i]
		d := &s.Req.Descriptors[i]
		d.Entries = s.entries[sp[0]:sp[1]:sp[1]]
		if o := s.ovr[i]; o >= 0 {
			d.Override = &s.overrides[o]
		}
	}
	return nil
}

// parseDescriptor appends RateLimitDescriptor i.
func (s *Request) parseDescriptor(m wireMsg, src string, bd *limiter.Bounds, i int) error {
	s.Req.Descriptors = append(s.Req.Descriptors, limiter.Descriptor{})
	d := &s.Req.Descriptors[len(s.Req.Descriptors)-1]
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
				return TooManyEntries(i, bd.MaxEntries)
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
func (s *Request) parseEntry(m wireMsg, src string, bd *limiter.Bounds, i, j int) error {
	var e limiter.Entry
	for {
		num, typ, ok, err := m.next()
		if err != nil {
			return err
		}
		if !ok {
			if err := CheckEntry(bd, i, j, len(e.Key), len(e.Value)); err != nil {
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
