package postgres

import (
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// mask replaces every secret maskDSN hides.
const mask = "xxxxx"

// RedactDSN is dsn for logs, errors and health output. A DSN that pgx
// parses is shown from its parsed form, never from its text:
//
//	postgres://user:secret@host:5432/db?sslmode=disable  → postgres://user@host:5432/db
//	host=db user=app password='se cret' dbname=sluice    → postgres://app@db:5432/sluice
//
// Parsing applies the PG* environment variables, as connecting does. A DSN
// that does not parse, or a URL whose user information holds an unescaped
// '/', '?' or '#' (an '@' past the host), shows no user information, path
// or query: only its scheme and hosts, when they can be told apart, or
// nothing of a keyword/value DSN.
func RedactDSN(dsn string) string {
	if dsn == "" {
		return ""
	}
	if ambiguousURL(dsn) {
		return redactUnparsed(dsn)
	}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return redactUnparsed(dsn)
	}
	var b strings.Builder
	b.WriteString("postgres://")
	if cfg.User != "" {
		b.WriteString(url.PathEscape(cfg.User) + "@")
	}
	b.WriteString(addresses(cfg))
	b.WriteString("/" + url.PathEscape(cfg.Database))
	return b.String()
}

// addresses is every host:port a parsed config tries, comma-separated, for
// health output: no user, no database.
func addresses(cfg *pgconn.Config) string {
	seen := map[string]bool{}
	var out []string
	add := func(host string, port uint16) {
		a := net.JoinHostPort(host, strconv.Itoa(int(port)))
		if strings.HasPrefix(host, "/") {
			a = host // a socket directory
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	add(cfg.Host, cfg.Port)
	for _, f := range cfg.Fallbacks {
		add(f.Host, f.Port)
	}
	return strings.Join(out, ",")
}

// ambiguousURL reports a URL DSN that pgx would read other than its
// writer meant, putting a piece of the password in a host, port, database
// or parameter: an '@' after the first '/', '?' or '#' past the scheme
// (one of those in the password ends the user information early), or two
// '@' before it (pgx, like libpq, ends the user information at the first
// '@'). A scheme in capitals is one too: pgx reads it as keyword/value.
func ambiguousURL(dsn string) bool {
	rest, prefix, ok := cutURLScheme(dsn)
	if !ok {
		return false
	}
	if prefix != strings.ToLower(prefix) {
		return true
	}
	auth := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		if strings.Contains(rest[i:], "@") {
			return true
		}
		auth = rest[:i]
	}
	return strings.Count(auth, "@") > 1
}

// redactUnparsed shows a DSN that does not parse: for a URL, its scheme
// and hosts when they can be told apart from its user information; for a
// keyword/value DSN, nothing of its values.
func redactUnparsed(dsn string) string {
	rest, prefix, ok := cutURLScheme(dsn)
	if !ok {
		return "(a keyword/value DSN that does not parse)"
	}
	prefix = strings.ToLower(prefix)
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		if strings.ContainsAny(rest[:i], "?#") {
			// The '@' may be a parameter's: what follows it may be a
			// piece of a password.
			return prefix
		}
		rest = rest[i+1:]
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	hosts := strings.Split(rest, ",")
	for i, h := range hosts {
		hosts[i] = plainHostPort(h)
	}
	return prefix + strings.Join(hosts, ",")
}

// plainHostPort is h when it is a host name or address with an optional
// numeric port; else as much of that as can be shown.
func plainHostPort(h string) string {
	host, port := h, ""
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		host, port = h[:i], h[i+1:]
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_[]:%", r)) {
			return "?"
		}
	}
	if port == "" || !allDigits(port) {
		if port != "" {
			return host + ":?"
		}
		return host
	}
	return host + ":" + port
}

// maskDSN returns dsn with its passwords replaced by xxxxx and everything
// else as written. It is not for display (see RedactDSN): it finds the
// spans of dsn that may be a password, to scrub them from pgx's messages.
// It handles both forms pgx accepts. A DSN that is malformed in a way that
// could put password bytes elsewhere, such as a URL whose password holds an
// unescaped '/' so that its '@' lands past the host, has everything up to
// its last '@' hidden.
func maskDSN(dsn string) string {
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
	return s != ""
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
