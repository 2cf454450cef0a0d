package limiter

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
)

// MaxKeyLen bounds a bucket key. Longer encodings are replaced by a hash.
const MaxKeyLen = 128

// KeyPart is one level of a bucket's descriptor path. Shared marks a level
// whose matching values share one bucket (share_threshold): Value then holds
// the node's pattern, encoded so it cannot equal a request value.
type KeyPart struct {
	Key    string
	Value  string
	Shared bool
}

// AppendKey appends the store key of a bucket to dst. The encoding is
// injective: the domain and every key and value are length-prefixed
// ("4:edge"), a shared level's value is marked with '*' before its length,
// and a request-side limit (override, may be nil) adds a '!' part naming
// its rate, so two different buckets never share a key whatever bytes the
// values hold. An encoding longer than MaxKeyLen is replaced by prefix + "#"
// + the base64 SHA-256 of the encoding, which cannot be mistaken for an
// unhashed key (those continue with a digit).
func AppendKey(dst []byte, prefix, domain string, parts []KeyPart, override *RateLimit) []byte {
	start := len(dst)
	dst = append(dst, prefix...)
	body := len(dst)
	dst = appendLP(dst, domain)
	for _, p := range parts {
		dst = appendLP(dst, p.Key)
		if p.Shared {
			dst = append(dst, '*')
		}
		dst = appendLP(dst, p.Value)
	}
	if override != nil {
		dst = append(dst, '!')
		dst = strconv.AppendUint(dst, uint64(override.RequestsPerUnit), 10)
		dst = append(dst, '/')
		dst = strconv.AppendUint(dst, uint64(override.Unit), 10)
		dst = append(dst, 'x')
		dst = strconv.AppendUint(dst, override.multiplier(), 10)
		dst = append(dst, '/')
		dst = strconv.AppendUint(dst, override.Capacity(), 10)
	}
	if len(dst)-start <= MaxKeyLen {
		return dst
	}
	sum := sha256.Sum256(dst[body:])
	dst = append(dst[:body], '#')
	return base64.RawURLEncoding.AppendEncode(dst, sum[:])
}

func appendLP(dst []byte, s string) []byte {
	dst = strconv.AppendUint(dst, uint64(len(s)), 10)
	dst = append(dst, ':')
	return append(dst, s...)
}
