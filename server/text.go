package server

import (
	"encoding/json"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/sluice-rl/sluice/limiter"
)

// Text fields of the admin API are checked on the raw bytes of the body:
// encoding/json turns invalid UTF-8 and lone surrogate escapes ("\ud800")
// into U+FFFD without a word, and a NUL byte, valid JSON as "\u0000", is
// refused by Postgres (SQLSTATE 22P05 in jsonb, 22021 in text). Both are
// the caller's mistakes, to be answered 400 naming the field, never sent on
// to Postgres where they would look like a failing backend.

// rawOverride is overrideBody with each text field left as its JSON
// literal.
type rawOverride struct {
	Domain      json.RawMessage `json:"domain"`
	Descriptors []struct {
		Key   json.RawMessage `json:"key"`
		Value json.RawMessage `json:"value"`
	} `json:"descriptors"`
	RateLimit json.RawMessage `json:"rate_limit"`
	Reason    json.RawMessage `json:"reason"`
}

// rawRateLimit holds the text fields of rate_limit as JSON literals.
type rawRateLimit struct {
	Name     json.RawMessage `json:"name"`
	Replaces []struct {
		Name json.RawMessage `json:"name"`
	} `json:"replaces"`
}

// checkOverrideText checks every text field of a PUT body that decoded
// into overrideBody: domain, descriptor keys and values and the limit's
// names refuse NUL, invalid UTF-8 and lone surrogates; reason also refuses
// the other control characters but tab. It returns the first problem as
// an error naming the field, or nil.
func checkOverrideText(body []byte) error {
	var in rawOverride
	if json.Unmarshal(body, &in) != nil {
		return nil // the body decoded once already; nothing more to say
	}
	check := func(field string, raw json.RawMessage, controls bool) error {
		if p := textProblem(raw, controls); p != "" {
			return &limiter.OverrideError{Field: field, Msg: p}
		}
		return nil
	}
	if err := check("domain", in.Domain, false); err != nil {
		return err
	}
	for i, e := range in.Descriptors {
		if err := check(fmt.Sprintf("descriptors[%d].key", i), e.Key, false); err != nil {
			return err
		}
		if err := check(fmt.Sprintf("descriptors[%d].value", i), e.Value, false); err != nil {
			return err
		}
	}
	var rl rawRateLimit
	if json.Unmarshal(in.RateLimit, &rl) == nil { // else ParseRateLimitJSON refuses it
		if err := check("rate_limit.name", rl.Name, false); err != nil {
			return err
		}
		for i, r := range rl.Replaces {
			if err := check(fmt.Sprintf("rate_limit.replaces[%d].name", i), r.Name, false); err != nil {
				return err
			}
		}
	}
	return check("reason", in.Reason, true)
}

// textProblem describes what is wrong with raw, a JSON string literal as
// it came over the wire, or returns "" when it is fine (or is not a
// string: the decoder has answered for that). It refuses a NUL byte,
// invalid UTF-8 and surrogate escapes that do not make a pair; with
// controls it also refuses the other C0 control characters, DEL and the
// C1 controls, except tab.
func textProblem(raw []byte, controls bool) string {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return ""
	}
	s := raw[1 : len(raw)-1]
	for i := 0; i < len(s); {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			if s[i+1] != 'u' {
				if controls && s[i+1] != 't' && (s[i+1] == 'b' || s[i+1] == 'f' || s[i+1] == 'n' || s[i+1] == 'r') {
					return "contains a control character (\\" + string(s[i+1]) + "); only tab is allowed"
				}
				i += 2
				continue
			}
			r, ok := hex4(s[i+2:])
			if !ok {
				return "" // not valid JSON; the decoder has refused it
			}
			i += 6
			switch {
			case r == 0:
				return "contains a NUL byte"
			case utf16.IsSurrogate(r):
				if r < 0xdc00 && i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if r2, ok := hex4(s[i+2:]); ok && r2 >= 0xdc00 && r2 < 0xe000 {
						i += 6
						continue
					}
				}
				return fmt.Sprintf("contains a lone surrogate escape \\u%04x; escape a character outside the BMP as a surrogate pair", r)
			case controls && isControl(r):
				return fmt.Sprintf("contains the control character U+%04X; only tab is allowed", r)
			}
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			return fmt.Sprintf("is not valid UTF-8 (byte 0x%02x at offset %d)", c, i)
		case r == 0:
			return "contains a NUL byte"
		case controls && isControl(r):
			return fmt.Sprintf("contains the control character U+%04X; only tab is allowed", r)
		}
		i += n
	}
	return ""
}

// isControl reports a C0 control but tab, DEL or a C1 control.
func isControl(r rune) bool {
	return r < 0x20 && r != '\t' || r >= 0x7f && r < 0xa0
}

// hex4 reads the four hex digits of a \u escape at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// actorProblem describes what is wrong with an actor header value, as
// textProblem does with controls on, or returns "".
func actorProblem(a string) string {
	for i := 0; i < len(a); {
		r, n := utf8.DecodeRuneInString(a[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			return fmt.Sprintf("is not valid UTF-8 (byte 0x%02x at offset %d)", a[i], i)
		case r == 0:
			return "contains a NUL byte"
		case isControl(r):
			return fmt.Sprintf("contains the control character U+%04X; only tab is allowed", r)
		}
		i += n
	}
	return ""
}
