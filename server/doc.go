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
// Over gRPC, grpc.codec chooses how ShouldRateLimit's messages are decoded
// and encoded (codec.go): directly from and to their protobuf encoding
// (direct, server/internal/wire, held to the protobuf runtime by fuzzing)
// or through the protobuf runtime after a bounded pre-scan (grpc); every
// other message goes through gRPC's protobuf codec.
//
// Health: backend checks (Options.Checks) run in the background and are
// cached. /health/live never looks at a backend; /health/ready and gRPC
// health fail only when no decision can be made (limits missing, or a
// required backend down) and during the drain; /health/detailed reports
// every backend and breaker, pass, warn or fail. The admin API under
// /admin/ is off unless a bearer token is configured; HandleAdmin adds
// routes to it.
package server
