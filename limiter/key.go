package limiter

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
)

// MaxKeyLen bounds a bucket key. Longer encodings have their tail replaced
// by a hash (see AppendKey).
const MaxKeyLen = 128

// maxTagLen bounds the plain hash tag; a longer one is hashed.
const maxTagLen = 64

// KeyPart is one level of a bucket's descriptor path. Shared marks a level
// whose matching values share one bucket (share_threshold): Value then holds
// the node's pattern, encoded so it cannot equal a request value.
type KeyPart struct {
	Key    string
	Value  string
	Shared bool
}

// AppendKey appends the store key of a bucket to dst:
//
//	prefix "{" tag "}" rest
//
// The encoding is injective: the domain and every key and value are
// length-prefixed ("4:edge"), a shared level's value is marked with '*'
// before its length, and a request-side limit (override, may be nil) adds a
// '!' part naming its rate, so two different buckets never share a key
// whatever bytes the values hold.
//
// The tag is the encoding of the domain and the first key part, so every
// bucket of one descriptor path's first entry (say remote_address=10.0.0.7,
// alone or with a path below it) lands in one Redis Cluster hash slot. A
// tag holding '}' or longer than 64 bytes is replaced by "#" + the base64
// SHA-256 of its encoding, so values can never choose the slot (Redis takes
// the text up to the first '}' as the tag). Plain tags start with a digit,
// so the two forms cannot be mistaken. rest is the encoding of the other
// parts and the override. When the whole key would be longer than
// MaxKeyLen, rest becomes "#" + the base64 SHA-256 of the full encoding
// (domain, every part, override), which an unhashed rest (empty, or
// starting with a digit or '!') cannot equal. The prefix must not contain
// '{' for the tag to be the one Redis sees.
func AppendKey(dst []byte, prefix, domain string, parts []KeyPart, override *RateLimit) []byte {
	start := len(dst)
	dst = append(dst, prefix...)
	dst = append(dst, '{')
	tag := len(dst)
	dst = appendLP(dst, domain)
	if len(parts) > 0 {
		dst = appendPart(dst, parts[0])
	}
	if len(dst)-tag > maxTagLen || bytes.IndexByte(dst[tag:], '}') >= 0 {
		sum := sha256.Sum256(dst[tag:])
		dst = append(dst[:tag], '#')
		dst = base64.RawURLEncoding.AppendEncode(dst, sum[:])
	}
	dst = append(dst, '}')
	rest := len(dst)
	for i := 1; i < len(parts); i++ {
		dst = appendPart(dst, parts[i])
	}
	dst = appendOverride(dst, override)
	if len(dst)-start <= MaxKeyLen {
		return dst
	}
	// Hash the full encoding, built again after the key.
	dst = dst[:rest]
	body := len(dst)
	dst = appendLP(dst, domain)
	for _, p := range parts {
		dst = appendPart(dst, p)
	}
	dst = appendOverride(dst, override)
	sum := sha256.Sum256(dst[body:])
	dst = append(dst[:rest], '#')
	return base64.RawURLEncoding.AppendEncode(dst, sum[:])
}

func appendPart(dst []byte, p KeyPart) []byte {
	dst = appendLP(dst, p.Key)
	if p.Shared {
		dst = append(dst, '*')
	}
	return appendLP(dst, p.Value)
}

func appendOverride(dst []byte, override *RateLimit) []byte {
	if override == nil {
		return dst
	}
	dst = append(dst, '!')
	dst = strconv.AppendUint(dst, uint64(override.RequestsPerUnit), 10)
	dst = append(dst, '/')
	dst = strconv.AppendUint(dst, uint64(override.Unit), 10)
	dst = append(dst, 'x')
	dst = strconv.AppendUint(dst, override.multiplier(), 10)
	dst = append(dst, '/')
	return strconv.AppendUint(dst, override.Capacity(), 10)
}

func appendLP(dst []byte, s string) []byte {
	dst = strconv.AppendUint(dst, uint64(len(s)), 10)
	dst = append(dst, ':')
	return append(dst, s...)
}
