// Package xds takes limits from an xDS control plane: an ADS
// state-of-the-world stream of RateLimitConfig resources
// (type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig), the
// way envoyproxy/ratelimit takes them from Envoy Gateway.
//
// Convert turns one resource (one domain) into a limiter.DomainConfig,
// checked as a limit file is. A Client keeps the stream: each response is
// converted whole and handed to its Apply function; it is ACKed when Apply
// accepts it and NACKed, with the error, when a resource is bad or Apply
// refuses it, so the last good limits keep serving. While the control
// plane is away the Client reconnects with a jittered exponential backoff.
//
// It must not import cmd/ or server: the caller decides what a set of
// domains does (package reload swaps them in with the files' and the
// overrides').
package xds
