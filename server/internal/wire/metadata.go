package wire

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-rl/sluice/limiter"
)

// DynamicMetadata is the response's dynamic_metadata as
// envoyproxy/ratelimit writes it (RESPONSE_DYNAMIC_METADATA): the domain;
// the descriptors, each with its entries as "key=value", its request-side
// limit in protobuf text form ("limit") and its own hits_addend
// ("hitsAddend") when given; the request's hits_addend when not 0; and
// "metadata", the merge of the metadata of the limits that passed
// (limiter.PassedMetadata), when there is any. The result is fresh: the
// caller may keep it.
func DynamicMetadata(req *limiter.Request, resp *limiter.Response) map[string]any {
	m := make(map[string]any, 4)
	m["domain"] = req.Domain
	ds := make([]any, 0, len(req.Descriptors))
	for i := range req.Descriptors {
		d := &req.Descriptors[i]
		entries := make([]any, len(d.Entries))
		for j, e := range d.Entries {
			entries[j] = e.Key + "=" + e.Value
		}
		dm := map[string]any{"entries": entries}
		if o := d.Override; o != nil {
			dm["limit"] = overrideText(o)
		}
		if d.HasCost {
			dm["hitsAddend"] = float64(d.Cost)
		}
		ds = append(ds, dm)
	}
	m["descriptors"] = ds
	if req.HitsAddend != 0 {
		m["hitsAddend"] = float64(req.HitsAddend)
	}
	if md := limiter.PassedMetadata(resp); len(md) > 0 {
		m["metadata"] = md
	}
	return m
}

// overrideText is the RateLimitOverride in the compact protobuf text form
// envoyproxy/ratelimit's descriptor.Limit.String() gives (without the
// random extra spaces the Go runtime may add to it).
func overrideText(o *limiter.RateLimit) string {
	var b []byte
	if o.RequestsPerUnit != 0 {
		b = strconv.AppendUint(append(b, "requests_per_unit:"...), uint64(o.RequestsPerUnit), 10)
	}
	if u := unitToProto(o.Unit); u != 0 {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		b = append(append(b, "unit:"...), u.String()...)
	}
	if o.UnitMultiplier != 0 {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		b = strconv.AppendUint(append(b, "unit_multiplier:{value:"...), uint64(o.UnitMultiplier), 10)
		b = append(b, '}')
	}
	return string(b)
}

// StructOf converts m (values as DynamicMetadata and the limit files
// give them) to a protobuf Struct, as AppendDynamicMetadata encodes it.
func StructOf(m map[string]any) *structpb.Struct {
	s := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(m))}
	for k, v := range m {
		s.Fields[k] = valueOf(v)
	}
	return s
}

func valueOf(v any) *structpb.Value {
	switch x := v.(type) {
	case nil:
		return structpb.NewNullValue()
	case bool:
		return structpb.NewBoolValue(x)
	case string:
		return structpb.NewStringValue(x)
	case map[string]any:
		return structpb.NewStructValue(StructOf(x))
	case []any:
		l := &structpb.ListValue{Values: make([]*structpb.Value, len(x))}
		for i, e := range x {
			l.Values[i] = valueOf(e)
		}
		return structpb.NewListValue(l)
	}
	if f, ok := number(v); ok {
		return structpb.NewNumberValue(f)
	}
	return structpb.NewStringValue(fmt.Sprint(v))
}

// number is v as a Struct number, for the numeric types a decoder may give.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case int32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint:
		return float64(x), true
	}
	return 0, false
}

// respDynamicMetadata is RateLimitResponse's dynamic_metadata field.
const respDynamicMetadata = 6

// deterministic orders map keys, so equal metadata encodes equally, as
// the grpc codec's deterministic marshal does.
var deterministic = proto.MarshalOptions{Deterministic: true}

// AppendDynamicMetadata appends the dynamic_metadata field holding m, as
// proto.Marshal with Deterministic set writes StructOf(m). It follows
// AppendResponse and the headers (field 6 comes last). The Struct is
// encoded by the protobuf runtime: dynamic metadata is off by default and
// small, so hand encoding would buy nothing worth its code. It fails only
// where proto.Marshal would (a string that is not UTF-8).
func AppendDynamicMetadata(b []byte, m map[string]any) ([]byte, error) {
	st := StructOf(m)
	b = protowire.AppendTag(b, respDynamicMetadata, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(deterministic.Size(st)))
	return deterministic.MarshalAppend(b, st)
}
