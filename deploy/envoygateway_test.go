package deploy_test

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// envoyGatewayConfig mirrors the part of Envoy Gateway's EnvoyGateway
// type (api/v1alpha1: EnvoyGatewaySpec, EnvoyGatewayKubernetesProvider,
// KubernetesDeploymentSpec, KubernetesContainerSpec, RateLimit) that the
// example sets, with the same JSON names. Decoding is strict, so a
// misspelt or misplaced field fails here instead of being ignored by the
// cluster.
type envoyGatewayConfig struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Gateway    struct {
		ControllerName string `yaml:"controllerName"`
	} `yaml:"gateway"`
	Provider struct {
		Type       string `yaml:"type"`
		Kubernetes struct {
			RateLimitDeployment struct {
				Container struct {
					Image           string `yaml:"image"`
					ImageRepository string `yaml:"imageRepository"`
					Env             []struct {
						Name  string `yaml:"name"`
						Value string `yaml:"value"`
					} `yaml:"env"`
				} `yaml:"container"`
			} `yaml:"rateLimitDeployment"`
		} `yaml:"kubernetes"`
	} `yaml:"provider"`
	RateLimit struct {
		Backend struct {
			Type  string `yaml:"type"`
			Redis struct {
				URL string `yaml:"url"`
			} `yaml:"redis"`
		} `yaml:"backend"`
	} `yaml:"rateLimit"`
}

// egImage is Envoy Gateway's validation of container.image (its CEL rule
// on KubernetesContainerSpec.Image).
var egImage = regexp.MustCompile(`^[a-zA-Z0-9._-]+(:[0-9]+)?(/[a-zA-Z0-9._/-]+)?(:[a-zA-Z0-9._-]+)?(@sha256:[a-z0-9]+)?$`)

// makefileImage is the name `make image` gives the image.
func makefileImage(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*(\S+)\s*$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("Makefile: no IMAGE ?= line")
	}
	return string(m[1])
}

func TestEnvoyGatewayConfig(t *testing.T) {
	const path = "envoy-gateway/envoy-gateway-config.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c envoyGatewayConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if c.APIVersion != "gateway.envoyproxy.io/v1alpha1" || c.Kind != "EnvoyGateway" {
		t.Errorf("%s: %s %s, want gateway.envoyproxy.io/v1alpha1 EnvoyGateway", path, c.APIVersion, c.Kind)
	}
	if c.Provider.Type != "Kubernetes" {
		t.Errorf("provider.type %q, want Kubernetes", c.Provider.Type)
	}
	ctr := c.Provider.Kubernetes.RateLimitDeployment.Container
	if want := makefileImage(t); ctr.Image != want {
		t.Errorf("provider.kubernetes.rateLimitDeployment.container.image %q, want %q (what make image tags)", ctr.Image, want)
	}
	if !egImage.MatchString(ctr.Image) {
		t.Errorf("container.image %q fails Envoy Gateway's validation", ctr.Image)
	}
	if ctr.ImageRepository != "" {
		t.Errorf("container.imageRepository is set: Envoy Gateway refuses it together with image")
	}
	// Run as /bin/ratelimit, Sluice reads Envoy Gateway's own REDIS_URL
	// and the rest of its environment: SLUICE_* variables there would be
	// ignored (compat mode), so the example must not rely on them.
	if c.RateLimit.Backend.Type != "Redis" {
		t.Fatalf("rateLimit.backend.type %q, want Redis", c.RateLimit.Backend.Type)
	}
	for _, e := range ctr.Env {
		if strings.HasPrefix(e.Name, "SLUICE_") && e.Name != "SLUICE_ADMIN_TOKEN" && e.Name != "SLUICE_ADMIN_ADDR" &&
			e.Name != "SLUICE_POSTGRES_DSN" {
			t.Errorf("container.env %s: ignored in compat mode; use envoyproxy/ratelimit's variable", e.Name)
		}
	}
}
