// Package metrics holds Sluice's Prometheus metrics: one Metrics, made in
// cmd/sluice on a registry of its own and handed to the parts that count,
// so nothing is registered globally and tests stay isolated.
//
// It counts decisions (by domain, the matched rule's name or key path,
// code and shadow mode; never a raw descriptor value unless a rule asks
// with detailed_metric or value_to_metric, and then only up to a cap),
// decision latency, store calls, Redis pipeline sizes, local deny-cache
// hits, failure-mode decisions, circuit breakers, backend checks, config
// reloads, overrides, and gRPC calls; plus Go runtime, process and build
// metrics. The request path uses label children resolved once per rule,
// so counting a decision allocates nothing.
//
// Every method is a no-op on a nil *Metrics.
//
// It imports limiter and breaker for their types; neither imports it.
package metrics
