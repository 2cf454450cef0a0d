package wire

import (
	"strconv"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-rl/sluice/limiter"
)

// One megabyte of empty descriptors is half a million of them; read whole
// by proto.Unmarshal before Validate refuses them, they cost about seventy
// times the message. ScanRequest, run first, keeps that from happening.

// TooManyDescriptors is the refusal of a request with more than bound
// descriptors; the count stops at the first one over.
func TooManyDescriptors(bound int) error {
	return &limiter.InvalidRequestError{Field: "descriptors", Msg: "more than the bound of " + strconv.Itoa(bound)}
}

// TooManyEntries is the refusal of descriptor i with more than bound entries.
func TooManyEntries(i, bound int) error {
	return &limiter.InvalidRequestError{Field: "descriptors[" + strconv.Itoa(i) + "].entries",
		Msg: "more than the bound of " + strconv.Itoa(bound)}
}

// tooLong is the refusal of entry j of descriptor i whose key or value
// (what) is n bytes, over bound; the message is Validate's.
func tooLong(i, j int, what string, n, bound int) error {
	return &limiter.InvalidRequestError{
		Field: "descriptors[" + strconv.Itoa(i) + "].entries[" + strconv.Itoa(j) + "]." + what,
		Msg:   strconv.Itoa(n) + " bytes, longer than the bound of " + strconv.Itoa(bound),
	}
}

// CheckEntry refuses entry j of descriptor i when its key or value is over
// the bounds.
func CheckEntry(b *limiter.Bounds, i, j, key, value int) error {
	if key > b.MaxKeyLen {
		return tooLong(i, j, "key", key, b.MaxKeyLen)
	}
	if value > b.MaxValueLen {
		return tooLong(i, j, "value", value, b.MaxValueLen)
	}
	return nil
}

// ScanRequest reads the protobuf encoding of a RateLimitRequest as far as
// needed to count its descriptors and their entries and to measure entry
// keys and values, without allocating. It returns the counts, or an
// *limiter.InvalidRequestError at the first descriptor, entry, key or
// value over b, or ErrMalformed for bytes that are not a protobuf message (it
// does not check all proto.Unmarshal checks, UTF-8 among them). Run before
// proto.Unmarshal, it keeps a flood of descriptors from being decoded into
// as many messages: a request it accepts decodes into at most
// b.MaxDescriptors descriptors of b.MaxEntries entries.
//
// Fields are read as the protobuf runtime reads them (FuzzScanRequest
// holds it to proto.Unmarshal): a field of the wrong wire type is an
// unknown field, and of a key or value given twice the last one counts.
func ScanRequest(data []byte, b *limiter.Bounds) (descriptors, entries int, err error) {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 || num > protowire.MaxValidNumber {
			return 0, 0, ErrMalformed
		}
		data = data[n:]
		if num == 2 && typ == protowire.BytesType {
			d, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return 0, 0, ErrMalformed
			}
			data = data[n:]
			if descriptors == b.MaxDescriptors {
				return 0, 0, TooManyDescriptors(b.MaxDescriptors)
			}
			e, err := scanDescriptor(d, b, descriptors)
			if err != nil {
				return 0, 0, err
			}
			descriptors++
			entries += e
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return 0, 0, ErrMalformed
		}
		data = data[n:]
	}
	return descriptors, entries, nil
}

// scanDescriptor counts the entries of descriptor i.
func scanDescriptor(data []byte, b *limiter.Bounds, i int) (entries int, err error) {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 || num > protowire.MaxValidNumber {
			return 0, ErrMalformed
		}
		data = data[n:]
		if num == 1 && typ == protowire.BytesType {
			e, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return 0, ErrMalformed
			}
			data = data[n:]
			if entries == b.MaxEntries {
				return 0, TooManyEntries(i, b.MaxEntries)
			}
			if err := scanEntry(e, b, i, entries); err != nil {
				return 0, err
			}
			entries++
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return 0, ErrMalformed
		}
		data = data[n:]
	}
	return entries, nil
}

// scanEntry measures entry j of descriptor i.
func scanEntry(data []byte, b *limiter.Bounds, i, j int) error {
	key, value := 0, 0
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 || num > protowire.MaxValidNumber {
			return ErrMalformed
		}
		data = data[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return ErrMalformed
			}
			data = data[n:]
			if num == 1 {
				key = len(v)
			} else {
				value = len(v)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return ErrMalformed
		}
		data = data[n:]
	}
	return CheckEntry(b, i, j, key, value)
}

// UnmarshalRequest is proto.Unmarshal of a RateLimitRequest held to b
// first by ScanRequest: the way to decode one with the protobuf runtime.
func UnmarshalRequest(data []byte, in *rlsv3.RateLimitRequest, b *limiter.Bounds) error {
	if _, _, err := ScanRequest(data, b); err != nil {
		return err
	}
	return proto.Unmarshal(data, in)
}
