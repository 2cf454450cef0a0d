package server

import (
	"bytes"
	"errors"
	"strconv"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/server/internal/wire"
)

// A request is held to the bounds while it is read, not after: the
// decoders stop at the first descriptor, entry, key or value over its
// bound, so a request costs memory in proportion to its size whatever it
// holds. One megabyte of empty descriptors is half a million of them; read
// whole before Validate refuses them, they cost a hundred times the
// message.

// jsonMaxDepth is the deepest nesting scanJSONRequest reads. A
// RateLimitRequest nests five deep (request, descriptors, descriptor,
// entries, entry) and has no field of free JSON, so protojson refuses
// anything deeper anyway.
const jsonMaxDepth = 16

// What a JSON object or array is, as far as scanJSONRequest cares.
const (
	jsonOther    = iota
	jsonRequest  // the top-level object
	jsonDescList // its "descriptors" array
	jsonDesc     // one element of it
	jsonEntries  // a descriptor's "entries" array
)

type jsonFrame struct {
	array bool
	role  uint8
	key   bool  // in an object: the next string is a name
	next  uint8 // in an object: the role of the value of the last name
	n     int   // in an array: elements so far
	index int   // of a jsonDesc: its position in the descriptors
}

// scanJSONRequest counts the descriptors of a protojson RateLimitRequest
// and the entries of each, without allocating, and returns an
// *limiter.InvalidRequestError at the first one over b, or an error for
// nesting deeper than any RateLimitRequest. Run before protojson.Unmarshal,
// it keeps a flood of descriptors from being decoded into as many messages.
// It checks no more than that: a body it accepts may still be refused by
// protojson, and every body protojson accepts and Validate would accept,
// it accepts (FuzzScanJSONRequest).
func scanJSONRequest(data []byte, b *limiter.Bounds) error {
	var stack [jsonMaxDepth]jsonFrame
	depth := 0
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch c {
		case ' ', '\t', '\r', '\n', ':':
			continue
		case ',':
			if depth > 0 && !stack[depth-1].array {
				stack[depth-1].key = true
			}
			continue
		case '}', ']':
			if depth > 0 {
				depth--
			}
			continue
		}
		// A string, or the start of a value.
		role := uint8(jsonOther)
		if depth > 0 {
			top := &stack[depth-1]
			if c == '"' && !top.array && top.key {
				end := jsonStringEnd(data, i+1)
				if end < 0 {
					return nil // unterminated: protojson refuses it
				}
				top.key, top.next = false, jsonOther
				switch {
				case top.role == jsonRequest && jsonNameIs(data[i+1:end], "descriptors"):
					top.next = jsonDescList
				case top.role == jsonDesc && jsonNameIs(data[i+1:end], "entries"):
					top.next = jsonEntries
				}
				i = end
				continue
			}
			if top.array {
				switch top.role {
				case jsonDescList:
					if top.n == b.MaxDescriptors {
						return wire.TooManyDescriptors(b.MaxDescriptors)
					}
					role = jsonDesc
				case jsonEntries:
					if top.n == b.MaxEntries {
						return wire.TooManyEntries(stack[depth-2].index, b.MaxEntries)
					}
				}
				top.n++
			} else {
				role = top.next
			}
		} else if c == '{' {
			role = jsonRequest
		}
		switch c {
		case '{', '[':
			if depth == jsonMaxDepth {
				return errors.New("body: nested deeper than " + strconv.Itoa(jsonMaxDepth) + " levels")
			}
			f := jsonFrame{array: c == '[', key: c == '{'}
			if f.array == (role == jsonDescList || role == jsonEntries) {
				f.role = role
			}
			if f.role == jsonDesc {
				f.index = stack[depth-1].n - 1
			}
			stack[depth] = f
			depth++
		case '"':
			end := jsonStringEnd(data, i+1)
			if end < 0 {
				return nil
			}
			i = end
		default:
			// A number or literal: skip to its end.
			for i+1 < len(data) && !jsonDelim(data[i+1]) {
				i++
			}
		}
	}
	return nil
}

// jsonDelim reports whether c ends a number or literal.
func jsonDelim(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', ',', ':', '{', '}', '[', ']', '"':
		return true
	}
	return false
}

// jsonStringEnd is the index of the quote that closes the string starting
// at data[from], or -1.
func jsonStringEnd(data []byte, from int) int {
	for i := from; i < len(data); {
		q := bytes.IndexByte(data[i:], '"')
		if q < 0 {
			return -1
		}
		q += i
		// Escaped when an odd number of backslashes precede it.
		bs := 0
		for k := q - 1; k >= from && data[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			return q
		}
		i = q + 1
	}
	return -1
}

// jsonNameIs reports whether the raw JSON string raw (without quotes)
// decodes to the ASCII name, escapes included, as protojson reads names.
func jsonNameIs(raw []byte, name string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == name
	}
	n := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '\\' {
			if i+1 >= len(raw) {
				return false
			}
			i++
			switch raw[i] {
			case '"', '\\', '/':
				c = raw[i]
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			case 'u':
				if i+4 >= len(raw) {
					return false
				}
				v, err := strconv.ParseUint(string(raw[i+1:i+5]), 16, 16)
				if err != nil || v >= 0x80 {
					return false
				}
				c = byte(v)
				i += 4
			default:
				return false
			}
		}
		if n >= len(name) || name[n] != c {
			return false
		}
		n++
	}
	return n == len(name)
}
