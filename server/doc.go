// Package server is Sluice's network edge: the Envoy RateLimitService over
// gRPC, the same decision as JSON over HTTP, gRPC and HTTP health, and the
// ordered drain on shutdown.
//
// It translates and nothing more: Envoy's RateLimitRequest becomes a
// limiter.Request, the limiter.Response becomes a RateLimitResponse, and
// limiter errors become gRPC codes (InvalidArgument for a bad request,
// Unavailable when no decision can be made; never Unknown). Decisions,
// matching and bucket maths belong to package limiter; backends to its
// subpackages. This package must not import a store implementation.
package server
