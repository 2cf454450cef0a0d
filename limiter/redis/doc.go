// Package redis is the limiter.Store that keeps token buckets in Redis, so
// every Sluice replica sees one truth.
//
// Each Apply is one EVALSHA of lua.TokenBucket, which reads the time from
// Redis (TIME), decides every bucket of the request atomically and writes
// back the buckets that changed. A bucket is stored as a small integer (its
// slack) under a key that expires at the millisecond the bucket is full
// again, so an idle bucket costs no memory. When Redis has lost the script
// (a restart, SCRIPT FLUSH) the call falls back to EVAL, which also reloads
// it, so the request does not fail.
//
// Redis 7.0 or newer is required: the script uses PEXPIRETIME, and relies on
// the Redis 7 default of replicating script effects.
//
// Only single-node Redis (redis://, rediss://, unix://) is supported for
// now; Sentinel and Cluster URLs are rejected by Config.Validate with a
// message saying so.
//
// The package imports limiter, lua and the go-redis client; it must not
// import the server or breaker packages. Failures are returned as errors for
// the caller (its breaker and failure mode) to handle: there are no retries
// here, because a take that timed out may have been paid. WithGuard sends
// every Apply through a Guard, the one-method interface a
// *breaker.Breaker satisfies, so an open breaker refuses calls at once.
//
// A call never waits longer than the read timeout in all: waiting for a
// free connection (PoolTimeout is set to the read timeout), dialing and
// the reply share one deadline, unless the caller's own is sooner. A
// frozen Redis therefore costs each call at most the read timeout, and
// the breaker, once open, nothing.
package redis
