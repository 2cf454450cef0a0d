package wire

import (
	"errors"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	"github.com/sluice-rl/sluice/limiter"
)

// Query is what Codec decodes a ShouldRateLimit request into on the direct
// path: Parse into Req.
type Query struct {
	Req    *Request
	Bounds *limiter.Bounds // held to while decoding
	Size   int             // bytes of the encoded request
	// Err is the bound the request broke, found while decoding: a codec's
	// own errors reach the client as INTERNAL, this one is for the handler
	// to answer INVALID_ARGUMENT.
	Err error
	// Owner is the caller's, for its handler: what the query belongs to.
	Owner any
}

// Checked is what Codec decodes a ShouldRateLimit request into on the
// protobuf runtime's path: UnmarshalRequest into Msg.
type Checked struct {
	Msg    *rlsv3.RateLimitRequest
	Bounds *limiter.Bounds
	Size   int
	Err    error // as Query.Err
}

// Codec is a server codec: protobuf for every message, except that a
// ShouldRateLimit request is decoded into a *Query or a *Checked, held to
// the bounds, and a plain []byte is an answer already encoded (no protobuf
// message is one; gRPC's binary log records it as the payload).
type Codec struct{ proto encoding.CodecV2 }

// NewCodec returns the codec, over gRPC's own protobuf codec.
func NewCodec() Codec { return Codec{proto: encoding.GetCodecV2(proto.Name)} }

// Name is the protobuf codec's: clients see no difference.
func (Codec) Name() string { return proto.Name }

// Marshal encodes v.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	if a, ok := v.([]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(a)}, nil
	}
	return c.proto.Marshal(v)
}

// Unmarshal decodes data into v.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch q := v.(type) {
	case *Query:
		q.Size = data.Len()
		b, buf := contiguous(data)
		err := q.Req.Parse(b, q.Bounds)
		release(buf)
		q.Err, err = splitBound(err)
		return err
	case *Checked:
		q.Size = data.Len()
		b, buf := contiguous(data)
		err := UnmarshalRequest(b, q.Msg, q.Bounds)
		release(buf)
		q.Err, err = splitBound(err)
		return err
	}
	return c.proto.Unmarshal(data, v)
}

// contiguous is data in one slice, and the buffer to release after, if it
// took one. Both decoders copy what they keep.
func contiguous(data mem.BufferSlice) ([]byte, mem.Buffer) {
	if len(data) == 1 {
		return data[0].ReadOnlyData(), nil
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	return buf.ReadOnlyData(), buf
}

func release(buf mem.Buffer) {
	if buf != nil {
		buf.Free()
	}
}

// splitBound separates a broken bound (the first result) from an error
// the codec returns (the second).
func splitBound(err error) (bound, codec error) {
	if inv := (*limiter.InvalidRequestError)(nil); errors.As(err, &inv) {
		return inv, nil
	}
	return nil, err
}
