package postgres

import (
	"net/url"
	"strings"
)

// mask replaces every secret RedactDSN hides.
const mask = "xxxxx"

// RedactDSN returns dsn with its passwords replaced by xxxxx, for logs,
// errors and health output. It handles both forms pgx accepts:
//
//	postgres://user:secret@host:5432/db?sslmode=disable  → postgres://user:xxxxx@host:5432/db?sslmode=disable
//	host=db user=app password='se cret' dbname=sluice    → host=db user=app password=xxxxx dbname=sluice
//
// The password and sslpassword parameters are hidden in either form (in a
// URL's query too). A DSN that is malformed in a way that could put
// password bytes elsewhere, such as a URL whose password holds an unescaped
// '/' so that its '@' lands past the host, has everything up to its last
// '@' hidden: RedactDSN hides too much rather than too little.
func RedactDSN(dsn string) string {
	if rest, prefix, ok := cutURLScheme(dsn); ok {
		return prefix + redactURLRest(rest)
	}
	return redactKeywordValue(dsn)
}

// cutURLScheme splits off a postgres:// or postgresql:// prefix, in any case.
func cutURLScheme(dsn string) (rest, prefix string, ok bool) {
	for _, p := range []string{"postgresql://", "postgres://"} {
		if len(dsn) >= len(p) && strings.EqualFold(dsn[:len(p)], p) {
			return dsn[len(p):], dsn[:len(p)], true
		}
	}
	return dsn, "", false
}

// redactURLRest redacts what follows the scheme of a URL DSN. It finds the
// user information the way libpq (and pgx) do: it runs to an '@' that comes
// before any '/'.
func redactURLRest(p string) string {
	var b strings.Builder
	if i := strings.IndexAny(p, "@/"); i >= 0 && p[i] == '@' {
		user, _, hasPassword := strings.Cut(p[:i], ":")
		b.WriteString(user)
		if hasPassword {
			b.WriteString(":" + mask)
		}
		b.WriteByte('@')
		p = p[i+1:]
	}
	hostPath, query, hasQuery := strings.Cut(p, "?")
	if strings.Contains(hostPath, "@") || strayAt(query) {
		// An '@' left over means the user information did not end where
		// a parser thinks: its password may be anywhere before the last
		// '@'. A password=... value before that '@' may run on past it,
		// to the next '&'.
		j := strings.LastIndexByte(p, '@')
		hidden := p[:j]
		p = p[j+1:]
		b.WriteString(mask + "@")
		if strings.Contains(strings.ToLower(hidden), "password") {
			k := strings.IndexByte(p, '&')
			if k < 0 {
				b.WriteString(mask)
				return b.String()
			}
			b.WriteString(mask)
			p = p[k:]
			b.WriteString(redactQuery(p))
			return b.String()
		}
		hostPath, query, hasQuery = strings.Cut(p, "?")
	}
	b.WriteString(redactPorts(hostPath))
	if hasQuery {
		b.WriteByte('?')
		b.WriteString(redactQuery(query))
	}
	return b.String()
}

// strayAt reports whether query has an '@' other than in the value of a
// password parameter, where it may legitimately be.
func strayAt(query string) bool {
	for _, pair := range strings.Split(query, "&") {
		key, _, hasValue := strings.Cut(pair, "=")
		if hasValue && isPasswordKey(decodeLenient(key)) {
			continue
		}
		if strings.Contains(pair, "@") {
			return true
		}
	}
	return false
}

// redactQuery hides the values of password parameters in a URL query (or
// in what follows a '&' of one).
func redactQuery(query string) string {
	pairs := strings.Split(query, "&")
	for i, pair := range pairs {
		key, _, hasValue := strings.Cut(pair, "=")
		if hasValue && isPasswordKey(decodeLenient(key)) {
			pairs[i] = key + "=" + mask
		}
	}
	return strings.Join(pairs, "&")
}

// redactPorts hides a port that is not a number in host[:port][,host[:port]]
// followed by an optional /database: a password written where the host is
// expected (postgres://user:secret/db, without '@host') would land there.
func redactPorts(hostPath string) string {
	hosts, path, hasPath := strings.Cut(hostPath, "/")
	list := strings.Split(hosts, ",")
	for i, h := range list {
		host, port := h, ""
		hasPort := false
		if strings.HasPrefix(h, "[") {
			if end := strings.IndexByte(h, ']'); end >= 0 {
				host, port = h[:end+1], h[end+1:]
				port, hasPort = strings.CutPrefix(port, ":")
			}
		} else {
			host, port, hasPort = strings.Cut(h, ":")
		}
		if hasPort && !allDigits(port) {
			list[i] = host + ":" + mask
		}
	}
	out := strings.Join(list, ",")
	if hasPath {
		out += "/" + path
	}
	return out
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isPasswordKey reports whether a connection parameter holds a secret.
func isPasswordKey(key string) bool {
	key = strings.ToLower(strings.TrimSpace(key))
	return key == "password" || key == "sslpassword"
}

func decodeLenient(s string) string {
	if d, err := url.QueryUnescape(s); err == nil {
		return d
	}
	return s
}

// redactKeywordValue hides the password values of a keyword/value DSN,
// keeping everything else as written. Values are read as libpq does: a
// quoted value runs to the next unescaped quote, any other to the next
// space, and a backslash escapes the character after it. When the DSN
// cannot be read that far and what is left mentions a password, the rest
// is hidden.
func redactKeywordValue(s string) string {
	var b strings.Builder
	const spaces = " \t\n\r\v\f"
	for {
		trimmed := strings.TrimLeft(s, spaces)
		b.WriteString(s[:len(s)-len(trimmed)])
		s = trimmed
		if s == "" {
			return b.String()
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return b.String() + hideIfPassword(s)
		}
		key := s[:eq]
		if strings.ContainsAny(strings.TrimRight(key, spaces), spaces) {
			// Not keyword=value: libpq rejects it.
			return b.String() + hideIfPassword(s)
		}
		b.WriteString(key + "=")
		s = s[eq+1:]
		trimmed = strings.TrimLeft(s, spaces)
		b.WriteString(s[:len(s)-len(trimmed)])
		s = trimmed
		end, ok := valueEnd(s)
		if !ok {
			// An unterminated quote swallows the rest.
			if isPasswordKey(key) {
				return b.String() + mask
			}
			return b.String() + hideIfPassword(s)
		}
		if isPasswordKey(key) {
			b.WriteString(mask)
		} else {
			b.WriteString(s[:end])
		}
		s = s[end:]
	}
}

// valueEnd returns the length of the keyword/value value at the start of s,
// quotes included, and false for an unterminated quoted value.
func valueEnd(s string) (int, bool) {
	if strings.HasPrefix(s, "'") {
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case '\'':
				return i + 1, true
			}
		}
		return len(s), false
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case ' ', '\t', '\n', '\r', '\v', '\f':
			return i, true
		}
	}
	return len(s), true
}

// hideIfPassword returns s, or the mask when s may hold a password.
func hideIfPassword(s string) string {
	if strings.Contains(strings.ToLower(s), "password") {
		return mask
	}
	return s
}
