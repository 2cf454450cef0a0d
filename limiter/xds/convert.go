package xds

import (
	"errors"
	"fmt"
	"regexp"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-rl/sluice/limiter"
)

// TypeURL is the type of the resources the client subscribes to.
const TypeURL = "type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig"

// Source names a resource in errors and in DomainConfig.File:
// "xds:<resource name>".
func Source(name string) string { return "xds:" + name }

// Convert turns one RateLimitConfig (one domain) into a DomainConfig,
// checked exactly as a limit file is: the resource is written out in the
// limit-file format and parsed by limiter.ParseLimitFile, so a descriptor
// without a key, a duplicate at one level, an unlimited limit with a
// unit, a replaces naming nothing are refused with the same words. Errors
// are a limiter.FileErrors whose file is Source(name) and whose fields
// are the resource's (descriptors[0].rate_limit.unit), without line
// numbers, which would be those of the generated text.
func Convert(rc *rlsconfv3.RateLimitConfig) (limiter.DomainConfig, error) {
	src := Source(rc.GetName())
	data, err := yaml.Marshal(fileDomain{Domain: rc.GetDomain(), Descriptors: fileDescriptors(rc.GetDescriptors())})
	if err != nil {
		return limiter.DomainConfig{}, fmt.Errorf("%s: %w", src, err)
	}
	d, err := limiter.ParseLimitFile(src, data)
	if err != nil {
		var fe limiter.FileErrors
		if errors.As(err, &fe) {
			for i := range fe {
				fe[i].Line = 0
				fe[i].Msg = atLine.ReplaceAllString(fe[i].Msg, "")
			}
			return limiter.DomainConfig{}, fe
		}
		return limiter.DomainConfig{}, err
	}
	d.Line = 0
	if err := setProtoOnly(src, "descriptors", d.Descriptors, rc.GetDescriptors()); err != nil {
		return limiter.DomainConfig{}, err
	}
	return d, nil
}

// atLine finds the parser's references to other lines ("is already given
// at line 7"), which would be the generated text's.
var atLine = regexp.MustCompile(` at line \d+`)

// The limit-file format, as Convert writes it. Fields the proto cannot
// tell from their zero value are left out when zero; key and domain are
// always written, so an empty one is reported by name.
type fileDomain struct {
	Domain      string           `yaml:"domain"`
	Descriptors []fileDescriptor `yaml:"descriptors,omitempty"`
}

type fileDescriptor struct {
	Key            string           `yaml:"key"`
	Value          string           `yaml:"value,omitempty"`
	RateLimit      *fileRateLimit   `yaml:"rate_limit,omitempty"`
	ShadowMode     bool             `yaml:"shadow_mode,omitempty"`
	DetailedMetric bool             `yaml:"detailed_metric,omitempty"`
	Descriptors    []fileDescriptor `yaml:"descriptors,omitempty"`
}

type fileRateLimit struct {
	Unit            string        `yaml:"unit,omitempty"`
	RequestsPerUnit *uint32       `yaml:"requests_per_unit,omitempty"`
	Unlimited       bool          `yaml:"unlimited,omitempty"`
	Name            string        `yaml:"name,omitempty"`
	Replaces        []fileReplace `yaml:"replaces,omitempty"`
}

type fileReplace struct {
	Name string `yaml:"name"`
}

// Units newer than the tagged proto module (v0.1.0 knows SECOND to DAY);
// proto3 enums are open, so their numbers arrive as they are.
const (
	unitMonth rlsconfv3.RateLimitUnit = 5
	unitYear  rlsconfv3.RateLimitUnit = 6
	unitWeek  rlsconfv3.RateLimitUnit = 7
)

// units maps the proto's units to the file's; UNKNOWN (unset) is left
// out, which the parser reports as a missing unit.
var units = map[rlsconfv3.RateLimitUnit]string{
	rlsconfv3.RateLimitUnit_SECOND: "second",
	rlsconfv3.RateLimitUnit_MINUTE: "minute",
	rlsconfv3.RateLimitUnit_HOUR:   "hour",
	rlsconfv3.RateLimitUnit_DAY:    "day",
	unitWeek:                       "week",
	unitMonth:                      "month",
	unitYear:                       "year",
}

func fileDescriptors(ds []*rlsconfv3.RateLimitDescriptor) []fileDescriptor {
	if len(ds) == 0 {
		return nil
	}
	out := make([]fileDescriptor, len(ds))
	for i, d := range ds {
		out[i] = fileDescriptor{Key: d.GetKey(), Value: d.GetValue(), ShadowMode: d.GetShadowMode(),
			DetailedMetric: d.GetDetailedMetric(), Descriptors: fileDescriptors(d.GetDescriptors())}
		p := d.GetRateLimit()
		if p == nil {
			continue
		}
		rl := &fileRateLimit{Unlimited: p.GetUnlimited(), Name: p.GetName()}
		if u, ok := units[p.GetUnit()]; ok {
			rl.Unit = u
		} else if p.GetUnit() != rlsconfv3.RateLimitUnit_UNKNOWN {
			rl.Unit = fmt.Sprintf("unit_%d", int32(p.GetUnit())) // unknown here: the parser names it
		}
		// proto3 cannot tell 0 (a ban) from unset: a limited policy has
		// one; an unlimited one has one only when it is not 0, which
		// the parser then refuses.
		if rpu := p.GetRequestsPerUnit(); !p.GetUnlimited() || rpu != 0 {
			rl.RequestsPerUnit = &rpu
		}
		for _, r := range p.GetReplaces() {
			rl.Replaces = append(rl.Replaces, fileReplace{Name: r.GetName()})
		}
		out[i].RateLimit = rl
	}
	return out
}

// Fields of RateLimitDescriptor newer than the tagged proto module
// (github.com/envoyproxy/go-control-plane/ratelimit v0.1.0, the newest
// release): quota_mode (7, bool) and metadata (8, google.protobuf.Struct).
// Envoy Gateway sends them; a v0.1.0 message keeps them as unknown fields,
// read here by number.
const (
	fieldQuotaMode protowire.Number = 7
	fieldMetadata  protowire.Number = 8
)

// setProtoOnly walks the parsed tree beside the proto's and sets what the
// limit-file text does not carry: quota_mode and metadata. It also clears
// the lines, which are the generated text's.
func setProtoOnly(src, path string, ds []limiter.DescriptorConfig, pbs []*rlsconfv3.RateLimitDescriptor) error {
	for i := range ds {
		d, pb := &ds[i], pbs[i]
		d.Line = 0
		at := fmt.Sprintf("%s[%d]", path, i)
		quota, md, err := newerFields(pb)
		if err != nil {
			return limiter.FileErrors{{File: src, Field: at, Msg: err.Error()}}
		}
		d.QuotaMode = quota
		if md != nil {
			d.Metadata = md.AsMap()
		}
		if err := setProtoOnly(src, at+".descriptors", d.Descriptors, pb.GetDescriptors()); err != nil {
			return err
		}
	}
	return nil
}

// newerFields reads quota_mode and metadata from the descriptor's unknown
// fields (the last occurrence wins, as in protobuf).
func newerFields(pb *rlsconfv3.RateLimitDescriptor) (quota bool, md *structpb.Struct, err error) {
	b := pb.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, nil, fmt.Errorf("malformed field: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == fieldQuotaMode && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return false, nil, fmt.Errorf("quota_mode: %w", protowire.ParseError(m))
			}
			quota, n = v != 0, m
		case num == fieldMetadata && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return false, nil, fmt.Errorf("metadata: %w", protowire.ParseError(m))
			}
			md = &structpb.Struct{}
			if err := proto.Unmarshal(v, md); err != nil {
				return false, nil, fmt.Errorf("metadata: %w", err)
			}
			n = m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false, nil, fmt.Errorf("malformed field %d: %w", num, protowire.ParseError(n))
			}
		}
		b = b[n:]
	}
	return quota, md, nil
}
