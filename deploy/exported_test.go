package deploy_test

import "testing"

// family is one metric family Sluice exports: its name, type and labels.
type family struct {
	name   string
	typ    string
	labels []string
}

// exportedMetrics lists the metric families Sluice exports.
func exportedMetrics(t *testing.T) map[string]family {
	t.Helper()
	out := map[string]family{}
	for _, f := range []family{
		{"sluice_decisions_total", "counter", []string{"domain", "descriptor", "code", "shadow"}},
		{"sluice_decision_duration_seconds", "histogram", nil},
		{"sluice_store_requests_total", "counter", []string{"store", "result"}},
		{"sluice_store_duration_seconds", "histogram", []string{"store"}},
		{"sluice_store_batch_size", "histogram", nil},
		{"sluice_local_cache_hits_total", "counter", nil},
		{"sluice_failure_mode_decisions_total", "counter", []string{"mode"}},
		{"sluice_breaker_state", "gauge", []string{"breaker"}},
		{"sluice_breaker_transitions_total", "counter", []string{"breaker", "from", "to"}},
		{"sluice_breaker_rejections_total", "counter", []string{"breaker"}},
		{"sluice_backend_up", "gauge", []string{"backend"}},
		{"sluice_backend_check_duration_seconds", "histogram", []string{"backend"}},
		{"sluice_config_reloads_total", "counter", []string{"result"}},
		{"sluice_config_last_reload_successful", "gauge", nil},
		{"sluice_overrides", "gauge", nil},
		{"sluice_grpc_server_handled_total", "counter", []string{"method", "code"}},
		{"sluice_grpc_server_handling_seconds", "histogram", []string{"method"}},
		{"sluice_build_info", "gauge", []string{"version", "revision", "goversion"}},
		{"go_goroutines", "gauge", nil},
		{"go_memstats_heap_inuse_bytes", "gauge", nil},
		{"process_resident_memory_bytes", "gauge", nil},
		{"process_cpu_seconds_total", "counter", nil},
	} {
		out[f.name] = f
	}
	return out
}
