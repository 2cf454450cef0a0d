package limiter_test

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-rl/sluice/limiter"
)

const keyPrefix = "sl:"

// canonKey is what identifies a bucket: two inputs with equal canonKeys
// must share a key, and two with different ones must not. An override is
// identified by the rate it sets (name aside, defaults applied).
type canonKey struct {
	Domain   string
	Parts    []limiter.KeyPart
	Override string // "" for none
}

func canon(domain string, parts []limiter.KeyPart, o *limiter.RateLimit) canonKey {
	c := canonKey{Domain: domain, Parts: append([]limiter.KeyPart{}, parts...)}
	if o != nil {
		mult := uint64(o.UnitMultiplier)
		if mult == 0 {
			mult = 1
		}
		c.Override = fmt.Sprintf("%d/%d/%d/%d", o.RequestsPerUnit, o.Unit, mult, o.Capacity())
	}
	return c
}

// decodeKey is an independent decoder of an unhashed key body, written from
// AppendKey's documented format.
func decodeKey(body string) (canonKey, error) {
	var c canonKey
	c.Parts = []limiter.KeyPart{}
	lp := func() (string, error) {
		i := strings.IndexByte(body, ':')
		if i <= 0 {
			return "", fmt.Errorf("no length at %q", body)
		}
		n, err := strconv.Atoi(body[:i])
		if err != nil || n < 0 || n > len(body)-i-1 || (i > 1 && body[0] == '0') {
			return "", fmt.Errorf("bad length at %q", body)
		}
		s := body[i+1 : i+1+n]
		body = body[i+1+n:]
		return s, nil
	}
	var err error
	if c.Domain, err = lp(); err != nil {
		return c, err
	}
	for body != "" {
		if body[0] == '!' {
			var r, u, m, capacity uint64
			if _, err := fmt.Sscanf(body, "!%d/%dx%d/%d", &r, &u, &m, &capacity); err != nil {
				return c, fmt.Errorf("bad override %q: %w", body, err)
			}
			want := fmt.Sprintf("!%d/%dx%d/%d", r, u, m, capacity)
			if body != want {
				return c, fmt.Errorf("override %q is not canonical %q", body, want)
			}
			c.Override = fmt.Sprintf("%d/%d/%d/%d", r, u, m, capacity)
			return c, nil
		}
		var p limiter.KeyPart
		if p.Key, err = lp(); err != nil {
			return c, err
		}
		if body != "" && body[0] == '*' {
			p.Shared = true
			body = body[1:]
		}
		if p.Value, err = lp(); err != nil {
			return c, err
		}
		c.Parts = append(c.Parts, p)
	}
	return c, nil
}

// checkKey checks one key against its input: bounded, a tag Redis Cluster
// reads as the domain and first part (plain or hashed), and a rest that
// decodes back to the input or is the hashed form of the documented
// encoding.
func checkKey(t *testing.T, key string, c canonKey) {
	t.Helper()
	if !strings.HasPrefix(key, keyPrefix+"{") {
		t.Fatalf("key %q lacks prefix and tag", key)
	}
	hashLen := 1 + base64.RawURLEncoding.EncodedLen(sha256.Size)
	if maxLen := len(keyPrefix) + 2 + 2*hashLen; len(key) > max(limiter.MaxKeyLen, maxLen) {
		t.Fatalf("key of %d bytes: %q", len(key), key)
	}
	body := key[len(keyPrefix)+1:]
	end := strings.IndexByte(body, '}')
	if end <= 0 {
		t.Fatalf("key %q has no non-empty tag", key)
	}
	tag, rest := body[:end], body[end+1:]
	head := canonKey{Domain: c.Domain, Parts: []limiter.KeyPart{}}
	if len(c.Parts) > 0 {
		head.Parts = c.Parts[:1]
	}
	refTag := refBody(head)
	switch {
	case strings.HasPrefix(tag, "#"):
		if len(refTag) <= 64 && !strings.Contains(refTag, "}") {
			t.Fatalf("short tag %q hashed: %q", refTag, key)
		}
		sum := sha256.Sum256([]byte(refTag))
		if want := "#" + base64.RawURLEncoding.EncodeToString(sum[:]); tag != want {
			t.Fatalf("hashed tag %q, want %q", tag, want)
		}
	case tag != refTag:
		t.Fatalf("tag %q, want %q", tag, refTag)
	}
	if strings.HasPrefix(rest, "#") {
		if len(rest) != hashLen {
			t.Fatalf("hashed rest of %d bytes, want %d: %q", len(rest), hashLen, key)
		}
		ref := refBody(c)
		if plain := len(keyPrefix) + 2 + len(tag) + len(ref) - len(refTag); plain <= limiter.MaxKeyLen {
			t.Fatalf("key of %d bytes hashed: %q", plain, key)
		}
		sum := sha256.Sum256([]byte(ref))
		if want := "#" + base64.RawURLEncoding.EncodeToString(sum[:]); rest != want {
			t.Fatalf("hashed key %q, want rest %q", key, want)
		}
		return
	}
	if len(key) > limiter.MaxKeyLen {
		t.Fatalf("unhashed key of %d bytes: %q", len(key), key)
	}
	// Decode the plain tag, or take the input's head when it was hashed.
	var got canonKey
	var err error
	if strings.HasPrefix(tag, "#") {
		got, err = decodeKey(refTag + rest)
	} else {
		got, err = decodeKey(tag + rest)
	}
	if err != nil {
		t.Fatalf("key %q does not decode: %v", key, err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("key %q decodes to %+v, want %+v", key, got, c)
	}
}

// refBody is the documented encoding, written independently.
func refBody(c canonKey) string {
	var b strings.Builder
	lp := func(s string) { fmt.Fprintf(&b, "%d:%s", len(s), s) }
	lp(c.Domain)
	for _, p := range c.Parts {
		lp(p.Key)
		if p.Shared {
			b.WriteByte('*')
		}
		lp(p.Value)
	}
	if c.Override != "" {
		var r, u, m, capacity uint64
		// Override was written by fmt from four numbers; a failed scan
		// leaves zeros, which still tell overrides apart by what was read.
		_, _ = fmt.Sscanf(c.Override, "%d/%d/%d/%d", &r, &u, &m, &capacity)
		fmt.Fprintf(&b, "!%d/%dx%d/%d", r, u, m, capacity)
	}
	return b.String()
}

// fuzzParts reads key parts from fuzz bytes: repeatedly a flags byte (low
// bit: shared; the rest: key length), the key, a length byte, the value.
func fuzzParts(raw []byte) []limiter.KeyPart {
	parts := []limiter.KeyPart{}
	take := func(n int) string {
		n = min(n, len(raw))
		s := string(raw[:n])
		raw = raw[n:]
		return s
	}
	for len(raw) > 0 && len(parts) < 8 {
		flags := raw[0]
		raw = raw[1:]
		p := limiter.KeyPart{Shared: flags&1 == 1, Key: take(int(flags>>1) % 24)}
		if len(raw) > 0 {
			n := int(raw[0]) % 48
			raw = raw[1:]
			p.Value = take(n)
		}
		parts = append(parts, p)
	}
	return parts
}

// fuzzOverride makes a request-side limit from a number, in small ranges so
// that equal rates written differently (multiplier 0 or 1, burst 0 or
// requests_per_unit) come up.
func fuzzOverride(v uint64) *limiter.RateLimit {
	if v&1 == 0 {
		return nil
	}
	return &limiter.RateLimit{
		RequestsPerUnit: uint32(v>>1) % 8,
		Unit:            limiter.Unit(v>>4) % 8,
		UnitMultiplier:  uint32(v>>7) % 3,
		Burst:           uint32(v>>9) % 8,
		Name:            strconv.Itoa(int(v>>12) % 2),
	}
}

func FuzzAppendKey(f *testing.F) {
	f.Add("edge", []byte("\x0aremote\x0210"), uint64(0), "edge", []byte("\x0aremote\x0211"), uint64(0))
	f.Add("a", []byte("\x02b\x03c:d"), uint64(3), "a", []byte("\x02b\x01c\x01d"), uint64(3))
	f.Add("d", []byte("\x03k\x00"), uint64(0), "d", []byte("\x02k\x01*"), uint64(0))
	f.Add("d", []byte("\x02k\x01v"), uint64(1|2<<1|1<<4), "d", []byte("\x02k\x01v"), uint64(1|2<<1|1<<4|1<<7|2<<9))
	f.Add(strings.Repeat("x", 200), []byte("\x02k\x01v"), uint64(0), strings.Repeat("x", 199), []byte("\x02k\x01v"), uint64(0))
	f.Add("{tag}", []byte("\x02k\x07{a}|\n\x00é"), uint64(5), "", []byte(""), uint64(0))
	f.Fuzz(func(t *testing.T, d1 string, raw1 []byte, o1 uint64, d2 string, raw2 []byte, o2 uint64) {
		p1, p2 := fuzzParts(raw1), fuzzParts(raw2)
		ov1, ov2 := fuzzOverride(o1), fuzzOverride(o2)
		k1 := string(limiter.AppendKey(nil, keyPrefix, d1, p1, ov1))
		k2 := string(limiter.AppendKey([]byte("junk"), keyPrefix, d2, p2, ov2))[len("junk"):]
		c1, c2 := canon(d1, p1, ov1), canon(d2, p2, ov2)
		checkKey(t, k1, c1)
		checkKey(t, k2, c2)
		if same := reflect.DeepEqual(c1, c2); same != (k1 == k2) {
			t.Fatalf("inputs equal=%v but keys equal=%v:\n%+v -> %q\n%+v -> %q", same, k1 == k2, c1, k1, c2, k2)
		}
	})
}

func TestAppendKeyCollisions(t *testing.T) {
	type in struct {
		domain string
		parts  []limiter.KeyPart
		o      *limiter.RateLimit
	}
	kp := func(kv ...string) []limiter.KeyPart {
		var ps []limiter.KeyPart
		for i := 0; i+1 < len(kv); i += 2 {
			ps = append(ps, limiter.KeyPart{Key: kv[i], Value: kv[i+1]})
		}
		return ps
	}
	shared := func(k, v string) []limiter.KeyPart { return []limiter.KeyPart{{Key: k, Value: v, Shared: true}} }
	rl := &limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Second, UnitMultiplier: 1}
	long := strings.Repeat("v", 200)
	for _, tc := range []struct {
		name string
		a, b in
	}{
		{"colon in value", in{"d", kp("a", "b:1:c"), nil}, in{"d", kp("a", "b", "c", ""), nil}},
		{"colon in key", in{"d", kp("a:b", "c"), nil}, in{"d", kp("a", "b:c"), nil}},
		{"length-like value", in{"d", kp("k", "1:x"), nil}, in{"d", kp("k", "", "x", ""), nil}},
		{"pipe", in{"d", kp("a", "b|c"), nil}, in{"d", kp("a", "b", "c", ""), nil}},
		{"braces", in{"d", kp("a", "{x}"), nil}, in{"d", kp("a", "x"), nil}},
		{"brace split", in{"d", kp("a", "{x", "y}", ""), nil}, in{"d", kp("a", "{x}y"), nil}},
		{"newline", in{"d", kp("a", "b\nc"), nil}, in{"d", kp("a", "b", "c", ""), nil}},
		{"NUL", in{"d", kp("a", "b\x00"), nil}, in{"d", kp("a", "b"), nil}},
		{"UTF-8", in{"d", kp("a", "é"), nil}, in{"d", kp("a", "e\u0301"), nil}},
		{"invalid UTF-8", in{"d", kp("a", "\xff"), nil}, in{"d", kp("a", "\ufffd"), nil}},
		{"empty value vs shared pattern", in{"d", kp("k", ""), nil}, in{"d", shared("k", ""), nil}},
		{"star value vs shared pattern", in{"d", kp("k", "*"), nil}, in{"d", shared("k", "*"), nil}},
		{"shared marker in value", in{"d", kp("k", "*1:a"), nil}, in{"d", shared("k", "a"), nil}},
		{"override vs none", in{"d", kp("k", "v"), rl}, in{"d", kp("k", "v"), nil}},
		{"override text in value", in{"d", kp("k", "v!10/1x1/10"), nil}, in{"d", kp("k", "v"), rl}},
		{"override rates", in{"d", kp("k", "v"), rl}, in{"d", kp("k", "v"), &limiter.RateLimit{RequestsPerUnit: 10, Unit: limiter.Second, Burst: 11}}},
		{"domain vs key", in{"a", kp("b", "c"), nil}, in{"a1:b", kp("c", ""), nil}},
		{"empty domain", in{"", kp("d", "x"), nil}, in{"d", kp("x", ""), nil}},
		{"no parts vs empty part", in{"d", nil, nil}, in{"d", kp("", ""), nil}},
		{"long values differ at the end", in{"d", kp("k", long+"a"), nil}, in{"d", kp("k", long+"b"), nil}},
		{"long vs short", in{"d", kp("k", long), nil}, in{"d", kp("k", "v"), nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ka := string(limiter.AppendKey(nil, keyPrefix, tc.a.domain, tc.a.parts, tc.a.o))
			kb := string(limiter.AppendKey(nil, keyPrefix, tc.b.domain, tc.b.parts, tc.b.o))
			if ka == kb {
				t.Fatalf("both give %q", ka)
			}
			checkKey(t, ka, canon(tc.a.domain, tc.a.parts, tc.a.o))
			checkKey(t, kb, canon(tc.b.domain, tc.b.parts, tc.b.o))
		})
	}

	// The same bucket written differently shares a key.
	for _, o := range []*limiter.RateLimit{
		{RequestsPerUnit: 10, Unit: limiter.Second, Burst: 10, UnitMultiplier: 1},
		{RequestsPerUnit: 10, Unit: limiter.Second, Name: "other"},
	} {
		if a, b := limiter.AppendKey(nil, keyPrefix, "d", kp("k", "v"), rl), limiter.AppendKey(nil, keyPrefix, "d", kp("k", "v"), o); string(a) != string(b) {
			t.Errorf("override %+v: key %q, want %q", o, b, a)
		}
	}
}
