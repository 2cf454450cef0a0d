package deploy_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-rl/sluice/limiter"
	"github.com/sluice-rl/sluice/limiter/memory"
	"github.com/sluice-rl/sluice/server"
)

// containerConfig is the part of deploy/sluice/config.yaml the manifests
// depend on.
type containerConfig struct {
	GRPC   struct{ Addr string }
	HTTP   struct{ Addr string }
	Limits struct{ Path string }
	Shut   struct {
		DrainDelay time.Duration `yaml:"drain_delay"`
		Timeout    time.Duration
	} `yaml:"shutdown"`
}

func loadContainerConfig(t *testing.T) containerConfig {
	t.Helper()
	data, err := os.ReadFile("sluice/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c containerConfig
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// checkHealthPath asks a real server, able to decide, for path: it must
// answer 200.
func checkHealthPath(t *testing.T, path string) {
	t.Helper()
	lim := limiter.New(memory.New(nil), limiter.Config{})
	lims, err := limiter.Compile(nil, limiter.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lim.SetLimits(lims)
	srv, err := server.New(server.DefaultConfig(), lim, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Errorf("GET %s on the server: %d, want 200", path, rec.Code)
	}
}

func kubeObjects(t *testing.T) map[string]map[string]any {
	t.Helper()
	objs := map[string]map[string]any{}
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in kubernetes/: %v", err)
	}
	for _, f := range files {
		for _, doc := range readYAML(t, f) {
			kind, name := str(doc["kind"]), str(get(doc, "metadata", "name"))
			if kind == "" || str(doc["apiVersion"]) == "" {
				t.Errorf("%s: document without kind or apiVersion", f)
			}
			if kind == "Kustomization" {
				for _, r := range list(doc["resources"]) {
					if _, err := os.Stat(filepath.Join("kubernetes", str(r))); err != nil {
						t.Errorf("%s: resource %v: %v", f, r, err)
					}
				}
				continue
			}
			objs[kind+"/"+name] = doc
		}
	}
	return objs
}

func TestKubernetesManifests(t *testing.T) {
	objs := kubeObjects(t)
	dep, svc, cm := objs["Deployment/sluice"], objs["Service/sluice"], objs["ConfigMap/sluice"]
	if dep == nil || svc == nil || cm == nil {
		t.Fatalf("want Deployment, Service and ConfigMap named sluice; have %v", keys(objs))
	}
	grpcPort, httpPort := defaultPorts(t)
	cfg := loadContainerConfig(t)
	if !strings.HasSuffix(cfg.GRPC.Addr, ":"+itoa(grpcPort)) || !strings.HasSuffix(cfg.HTTP.Addr, ":"+itoa(httpPort)) {
		t.Errorf("sluice/config.yaml listens on %s and %s, not the default ports", cfg.GRPC.Addr, cfg.HTTP.Addr)
	}

	spec := get(dep, "spec", "template", "spec")
	sel := get(dep, "spec", "selector", "matchLabels").(map[string]any)
	podLabels := get(dep, "spec", "template", "metadata", "labels").(map[string]any)
	for k, v := range sel {
		if podLabels[k] != v {
			t.Errorf("Deployment selector %s=%v does not match the pod labels", k, v)
		}
	}
	for k, v := range get(svc, "spec", "selector").(map[string]any) {
		if podLabels[k] != v {
			t.Errorf("Service selector %s=%v does not match the pod labels", k, v)
		}
	}
	containers := list(get(spec, "containers"))
	if len(containers) != 1 {
		t.Fatalf("%d containers, want 1", len(containers))
	}
	c := containers[0]
	if img := str(get(c, "image")); !strings.Contains(img, "sluice") {
		t.Errorf("image %q", img)
	}
	args := list(get(c, "args"))
	if len(args) != 3 || str(args[0]) != "serve" || str(args[1]) != "-config" {
		t.Errorf("args %v, want serve -config FILE", args)
	}

	ports := map[string]int{}
	for _, p := range list(get(c, "ports")) {
		ports[str(get(p, "name"))] = get(p, "containerPort").(int)
	}
	if ports["grpc"] != grpcPort || ports["http"] != httpPort {
		t.Errorf("container ports %v, want grpc %d, http %d", ports, grpcPort, httpPort)
	}
	probePort := func(probe string) int {
		p := get(c, probe, "httpGet", "port")
		if n, ok := p.(int); ok {
			return n
		}
		return ports[str(p)]
	}
	for probe, path := range map[string]string{"livenessProbe": "/health/live", "readinessProbe": "/health/ready"} {
		if got := str(get(c, probe, "httpGet", "path")); got != path {
			t.Errorf("%s path %q, want %s", probe, got, path)
		}
		if got := probePort(probe); got != httpPort {
			t.Errorf("%s port %d, want the HTTP port %d", probe, got, httpPort)
		}
		checkHealthPath(t, path)
	}
	ann := get(dep, "spec", "template", "metadata", "annotations")
	if str(get(ann, "prometheus.io/port")) != itoa(httpPort) || str(get(ann, "prometheus.io/path")) != "/metrics" {
		t.Errorf("scrape annotations %v, want port %d path /metrics", ann, httpPort)
	}
	grace, _ := get(spec, "terminationGracePeriodSeconds").(int)
	if need := cfg.Shut.DrainDelay + cfg.Shut.Timeout; time.Duration(grace)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d is not more than drain_delay + timeout (%v): drains would be killed", grace, need)
	}

	svcPorts := map[string]int{}
	for _, p := range list(get(svc, "spec", "ports")) {
		tp := get(p, "targetPort")
		n, ok := tp.(int)
		if !ok {
			n = ports[str(tp)]
		}
		if n != get(p, "port").(int) {
			t.Errorf("Service port %v targets %v", get(p, "port"), tp)
		}
		svcPorts[str(get(p, "name"))] = n
	}
	if svcPorts["grpc"] != grpcPort || svcPorts["http"] != httpPort {
		t.Errorf("Service ports %v, want grpc %d, http %d", svcPorts, grpcPort, httpPort)
	}

	// The ConfigMap carries the same files as deploy/, mounted where the
	// config file and its limits path expect them.
	for key, file := range map[string]string{"config.yaml": "sluice/config.yaml", "edge.yaml": limitFile} {
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if got := str(get(cm, "data", key)); got != string(want) {
			t.Errorf("ConfigMap %s differs from %s", key, file)
		}
	}
	var mountPath string
	for _, m := range list(get(c, "volumeMounts")) {
		if str(get(m, "name")) == "config" {
			mountPath = str(get(m, "mountPath"))
		}
	}
	if want := mountPath + "/config.yaml"; str(args[2]) != want {
		t.Errorf("-config %v, want %s", args[2], want)
	}
	var items []string
	for _, v := range list(get(spec, "volumes")) {
		if str(get(v, "name")) == "config" && str(get(v, "configMap", "name")) == "sluice" {
			for _, it := range list(get(v, "configMap", "items")) {
				items = append(items, str(get(it, "path")))
			}
		}
	}
	if !slices.Contains(items, "config.yaml") || !slices.Contains(items, cfg.Limits.Path+"/edge.yaml") {
		t.Errorf("ConfigMap volume items %v, want config.yaml and %s/edge.yaml", items, cfg.Limits.Path)
	}
}

func TestComposeFile(t *testing.T) {
	doc := readYAML(t, "docker-compose.yml")[0]
	services, _ := doc["services"].(map[string]any)
	for _, name := range []string{"envoy", "sluice", "redis", "postgres", "app"} {
		if services[name] == nil {
			t.Errorf("no service %s", name)
		}
	}
	// Every bind-mounted file exists.
	for name, s := range services {
		for _, v := range list(get(s, "volumes")) {
			src, _, _ := strings.Cut(str(v), ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			}
		}
		if img := str(get(s, "image")); img == "" || !strings.Contains(img, ":") {
			t.Errorf("service %s: image %q, want a tagged image", name, img)
		}
	}
	grpcPort, httpPort := defaultPorts(t)
	sl := services["sluice"]
	if df := str(get(sl, "build", "dockerfile")); df != "" {
		if _, err := os.Stat(filepath.Join(str(get(sl, "build", "context")), df)); err != nil {
			t.Errorf("sluice build: %v", err)
		}
	}
	var published []string
	for _, p := range list(get(sl, "ports")) {
		published = append(published, str(p))
	}
	for _, want := range []string{itoa(grpcPort) + ":" + itoa(grpcPort), itoa(httpPort) + ":" + itoa(httpPort)} {
		if !slices.Contains(published, want) {
			t.Errorf("sluice ports %v, want %s", published, want)
		}
	}
	cmd := list(get(sl, "command"))
	if len(cmd) != 3 || str(cmd[0]) != "serve" || str(cmd[2]) != "/etc/sluice/config.yaml" {
		t.Errorf("sluice command %v", cmd)
	}
	env := get(sl, "environment")
	for k, host := range map[string]string{"SLUICE_REDIS_URL": "redis:6379", "SLUICE_POSTGRES_DSN": "postgres:5432"} {
		if !strings.Contains(str(get(env, k)), "@"+host) && !strings.Contains(str(get(env, k)), "//"+host) {
			t.Errorf("%s %q does not name the %s service", k, str(get(env, k)), host)
		}
	}
	// Envoy's clusters name compose services.
	p := loadEnvoy(t)
	for _, c := range p.boot.GetStaticResources().GetClusters() {
		for _, le := range c.GetLoadAssignment().GetEndpoints() {
			for _, ep := range le.GetLbEndpoints() {
				if host := ep.GetEndpoint().GetAddress().GetSocketAddress().GetAddress(); services[host] == nil {
					t.Errorf("envoy cluster %s sends to %s, which is not a compose service", c.GetName(), host)
				}
			}
		}
	}
	if !slices.ContainsFunc(list(get(services["envoy"], "volumes")), func(v any) bool {
		return strings.HasPrefix(str(v), "./"+envoyFile+":")
	}) {
		t.Errorf("envoy does not mount %s", envoyFile)
	}
}

func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile("systemd/sluice.service")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]map[string]string{}
	var cur string
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			cur = strings.Trim(line, "[]")
			sections[cur] = map[string]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || cur == "" {
				t.Fatalf("line %d: %q is not key=value in a section", i+1, line)
			}
			sections[cur][k] = v
		}
	}
	svc := sections["Service"]
	if !strings.HasPrefix(svc["ExecStart"], "/usr/local/bin/sluice serve -config ") {
		t.Errorf("ExecStart %q", svc["ExecStart"])
	}
	if !strings.Contains(svc["ExecReload"], "-HUP $MAINPID") {
		t.Errorf("ExecReload %q, want SIGHUP (reloads limits)", svc["ExecReload"])
	}
	if sections["Install"]["WantedBy"] == "" || sections["Unit"]["Description"] == "" {
		t.Errorf("missing Install.WantedBy or Unit.Description")
	}
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestAdminTokenNotShipped: no deploy file carries an admin token. Compose
// takes it from the environment and refuses to start without it;
// Kubernetes reads it from a Secret that the operator creates, as the
// Deployment's comment says, with a token long enough for Sluice.
func TestAdminTokenNotShipped(t *testing.T) {
	const name = "SLUICE_ADMIN_TOKEN"
	env := get(readYAML(t, "docker-compose.yml")[0], "services", "sluice", "environment")
	if v := str(get(env, name)); !regexp.MustCompile(`^\$\{` + name + `:\?[^}]+\}$`).MatchString(v) {
		t.Errorf("compose %s = %q, want ${%s:?message}: required from the environment, no default", name, v, name)
	}

	objs := kubeObjects(t)
	for key := range objs {
		if strings.HasPrefix(key, "Secret/") {
			t.Errorf("%s ships in the manifests; a Secret holding a token must be made by the operator", key)
		}
	}
	var ref any
	for _, e := range list(get(objs["Deployment/sluice"], "spec", "template", "spec", "containers", 0, "env")) {
		if str(get(e, "name")) == name {
			if get(e, "value") != nil {
				t.Errorf("Deployment sets %s to a literal value", name)
			}
			ref = get(e, "valueFrom", "secretKeyRef")
		}
	}
	secret, key := str(get(ref, "name")), str(get(ref, "key"))
	if secret == "" || key == "" {
		t.Fatalf("Deployment %s: want valueFrom.secretKeyRef with name and key, got %v", name, ref)
	}
	// The documented command makes that Secret, with enough characters.
	data, err := os.ReadFile("kubernetes/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`kubectl create secret generic (\S+) --from-literal=(\w+)=\$\(openssl rand -hex (\d+)\)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("kubernetes/deployment.yaml does not say how to create the Secret (kubectl create secret generic ...)")
	}
	if string(m[1]) != secret || string(m[2]) != key {
		t.Errorf("the documented command makes secret %s key %s; the Deployment reads %s key %s", m[1], m[2], secret, key)
	}
	if n, _ := strconv.Atoi(string(m[3])); 2*n < server.MinAdminTokenLen {
		t.Errorf("openssl rand -hex %d makes %d characters, fewer than the %d Sluice needs", n, 2*n, server.MinAdminTokenLen)
	}
}
