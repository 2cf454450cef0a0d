// Package redis is the limiter.Store that keeps token buckets in Redis, so
// every Sluice replica sees one truth.
//
// Each Apply is one EVALSHA of lua.TokenBucket, which reads the time from
// Redis (TIME), decides every bucket of the request atomically and writes
// back the buckets that changed. A bucket is stored as a small integer (its
// slack) under a key that expires at the millisecond the bucket is full
// again, so an idle bucket costs no memory. Every new connection loads the
// script; when Redis has lost it anyway (SCRIPT FLUSH) the call is sent
// again as EVAL, which reloads it, so the request does not fail.
//
// With batching on (the default), concurrent calls are written to Redis as
// pipelines by a few owned writer goroutines (see batcher): no waiting
// window, a batch forms from the calls queued while the previous pipelines
// are in flight, bounded by max_batch. batching: off sends one round trip
// per call, the baseline the bench suite compares against.
//
// Deployments (Config.URL): one node (redis://, rediss://, unix://), a
// Sentinel-managed master (redis+sentinel://, failover followed by the
// client without a restart) or a Cluster (redis+cluster://). In a cluster a
// request's buckets are grouped by hash slot (limiter.AppendKey tags keys
// with the domain and the descriptor's first entry), one script call per
// group; all or nothing holds across groups by refunds (see refund.go).
//
// Redis 7.0 or newer is required: the script uses PEXPIRETIME, and relies on
// the Redis 7 default of replicating script effects.
//
// The package imports limiter, lua and the go-redis client; it must not
// import the server or breaker packages. Failures are returned as errors for
// the caller (its breaker and failure mode) to handle: there are no retries
// here, because a take that timed out may have been paid (a NOSCRIPT reply,
// or a Cluster redirect, means the script did not run, and is followed).
// WithGuard sends every Apply through a Guard, the one-method interface a
// *breaker.Breaker satisfies, so an open breaker refuses calls at once.
//
// A call never waits longer than the read timeout in all: queueing for a
// pipeline, waiting for a free connection (PoolTimeout is set to the read
// timeout), dialing and the reply share one deadline, unless the caller's
// own is sooner. A frozen Redis therefore costs each call at most the read
// timeout, and the breaker, once open, nothing.
package redis
