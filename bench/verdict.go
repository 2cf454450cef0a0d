package bench

import (
	"context"
	"errors"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/sluice-rl/sluice/bench/internal/h2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// verdict is what a run keeps of an answer: the overall code and each
// descriptor status's code, in order.
type verdict struct {
	code     rlsv3.RateLimitResponse_Code
	statuses []rlsv3.RateLimitResponse_Code
}

// decider asks a server for a verdict.
type decider interface {
	decide(ctx context.Context, in *rlsv3.RateLimitRequest, v *verdict) error
}

// grpcDecider asks through a gRPC-Go client.
type grpcDecider struct{ c rlsv3.RateLimitServiceClient }

func (g grpcDecider) decide(ctx context.Context, in *rlsv3.RateLimitRequest, v *verdict) error {
	resp, err := g.c.ShouldRateLimit(ctx, in)
	if err != nil {
		return err
	}
	v.code = resp.GetOverallCode()
	v.statuses = v.statuses[:0]
	for _, st := range resp.GetStatuses() {
		v.statuses = append(v.statuses, st.GetCode())
	}
	return nil
}

// leanDecider is a decider on the lean client.
type leanDecider struct{ c *h2.Client }

// decide sends in and reads the verdict from the encoded answer without
// building the response message.
func (l leanDecider) decide(ctx context.Context, in *rlsv3.RateLimitRequest, v *verdict) error {
	return l.c.RoundTrip(ctx, in, func(body []byte) error {
		if err := v.parse(body); err != nil {
			return status.Errorf(codes.Internal, "unmarshal response: %v", err)
		}
		return nil
	})
}

var errMalformed = errors.New("malformed protobuf")

// parse reads a verdict from an encoded RateLimitResponse as
// proto.Unmarshal reads those fields: the last overall_code wins, a field
// of another wire type is an unknown one, every field must be well formed.
// Fields it does not read are skipped whole, so it accepts some answers
// proto.Unmarshal refuses (invalid UTF-8 in a header, say), never the
// reverse (FuzzVerdict).
func (v *verdict) parse(b []byte) error {
	v.code, v.statuses = 0, v.statuses[:0]
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num > protowire.MaxValidNumber {
			return errMalformed
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errMalformed
			}
			v.code, b = rlsv3.RateLimitResponse_Code(int32(x)), b[n:]
		case num == 2 && typ == protowire.BytesType:
			m, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errMalformed
			}
			code, err := statusCode(m)
			if err != nil {
				return err
			}
			v.statuses, b = append(v.statuses, code), b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
		}
	}
	return nil
}

// statusCode reads a DescriptorStatus's code (field 1).
func statusCode(b []byte) (rlsv3.RateLimitResponse_Code, error) {
	var code rlsv3.RateLimitResponse_Code
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num > protowire.MaxValidNumber {
			return 0, errMalformed
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, errMalformed
			}
			code, b = rlsv3.RateLimitResponse_Code(int32(x)), b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, errMalformed
		}
		b = b[n:]
	}
	return code, nil
}
