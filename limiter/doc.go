// Package limiter is Sluice's domain: limit trees and descriptor matching,
// token-bucket maths, the Store interface that backends implement, and the
// decision that turns a request into per-descriptor statuses.
//
// It must not import protobuf, gRPC, Redis or SQL packages. The gRPC and
// HTTP edges (package server) translate Envoy types to Request and back;
// backends live in subpackages named for their dependency (limiter/redis,
// limiter/memory).
//
// Failover wraps the primary store (Redis) and applies the failure mode
// when it fails: decide locally with scaled limits, allow, or return the
// error.
//
// Token buckets are kept as integers. A limit of R requests per P
// microseconds is reduced to Num/Den = R/P (lowest terms). A bucket's state
// is its debt D in units of 1/Num microsecond: the bucket is full when D is
// 0, a token costs Den units, the capacity is Cap*Den units, and time pays
// back Num units per microsecond. Every value stays below 2^53 so the Lua
// script (which computes in doubles) and the Go code agree exactly.
package limiter
