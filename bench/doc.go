// Package bench is the load harness behind `sluice bench`: it drives any
// server of Envoy's rate-limit API (envoy.service.ratelimit.v3
// RateLimitService/ShouldRateLimit over gRPC), Sluice or another, and
// reports throughput, latency, decision and error counts and, given the
// limit the server applies, how exactly the server kept it.
//
// It must import only the Envoy API types, gRPC, golang.org/x/net's HTTP/2
// framer (for the lean client, internal/h2) and the standard library, never
// Sluice's own packages, so that it measures any implementation the same
// way.
//
// Entry points:
//
//   - Main(ctx, args, stdout, stderr) is the whole command; cmd/sluice calls
//     it for the bench subcommand and exits with its code (0 every target
//     held, 1 a target failed, 2 usage error).
//   - Run(ctx, Options) returns a *Report for callers that build Options
//     themselves (tests, make bench); Report writes itself as text, JSON
//     and a self-contained HTML page.
//
// Two loop modes. The closed loop keeps Concurrency requests in flight,
// each worker sending its next request when the last is answered; it
// measures what the server sustains, but a stalled server slows the
// harness down with it and its queue never shows. The open loop schedules
// requests at Rate per second (uniform or Poisson arrivals) from a
// scheduler goroutine, whatever the server does, and hands them to at most
// Workers senders; latency counts from each request's intended send time,
// so time spent waiting for a free sender is charged to the server
// (no coordinated omission). Only the lateness of the scheduler's own timer
// is not charged (see runner.schedule).
//
// Workload: every request names Domain and carries Descriptors descriptors;
// descriptor i (from 0) has one entry whose key is Key for i = 0 and Key
// followed by i+1 after (remote_address, remote_address2, ...), and whose
// value is drawn independently, uniformly or Zipf-distributed, from Values
// values ValuePrefix0, ValuePrefix1, .... The server is expected to keep
// one bucket per (key, value) with the limit given as Limit. The default
// ValuePrefix is random, so each run starts on fresh, full buckets.
//
// Accuracy rules are documented on Accuracy; the JSON schema in README.md.
//
// Bounded by design: only loopback addresses unless AllowRemote; a run
// stops after Duration (or Requests) plus Warmup, every request has a
// Timeout, and requests still in flight at the end are waited for at most
// that long.
package bench
