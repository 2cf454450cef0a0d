# Sluice: `make run` starts the service on the embedded store; `make test-unit`
# runs the tests that need no servers, anywhere; `make test` installs what
# the rest need (redis-server, PostgreSQL) and runs every test with -race.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X main.version=$(VERSION) -X main.revision=$(REVISION)
BIN       := bin/sluice
# The name `make image` gives the image; deploy/envoy-gateway and
# deploy/kubernetes use it too.
IMAGE     ?= sluice:dev
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## build bin/sluice with version information
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/sluice

.PHONY: image
image: ## write bin/sluice-image.tar (docker load -i), no Docker daemon needed; IMAGE=name:tag
	@# Times in the image are the last commit's, so one commit gives one digest.
	SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || echo 0)} \
		$(GO) run ./deploy/image -out bin/sluice-image.tar -tag $(IMAGE) \
		-version $(VERSION) -revision $(REVISION) -config config.yaml

.PHONY: run
run: build ## run Sluice on the embedded store with ./config.yaml
	./$(BIN) serve -config config.yaml

# promtool checks deploy/prometheus; from PATH, else unpacked from Debian's
# prometheus package into .tmp/promtool (the service is not installed).
PROMTOOL_DIR := .tmp/promtool
PROMTOOL     ?= $(shell command -v promtool 2>/dev/null || echo $(CURDIR)/$(PROMTOOL_DIR)/root/usr/bin/promtool)

.PHONY: promtool
promtool: ## fetch promtool (Debian package prometheus, unpacked, not installed) when missing
	@[ -x "$(PROMTOOL)" ] || { \
		echo "fetching promtool into $(PROMTOOL_DIR)"; \
		rm -rf $(PROMTOOL_DIR) && mkdir -p $(PROMTOOL_DIR) && cd $(PROMTOOL_DIR) && \
		{ apt-get download prometheus >/dev/null 2>&1 || \
			{ $(SUDO) apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; } && \
		dpkg -x prometheus_*.deb root && rm -f prometheus_*.deb; }
	@"$(PROMTOOL)" --version 2>&1 | head -1

.PHONY: deps
deps: promtool ## install the servers the tests start (redis-server, postgres) and promtool
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@redis-server --version
	@# Tests run initdb and postgres themselves: no cluster of the package's own.
	@{ [ -x "$$(pg_config --bindir 2>/dev/null)/initdb" ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || { \
		echo "installing postgresql"; \
		$(SUDO) mkdir -p /etc/postgresql-common/createcluster.d && \
		echo "create_main_cluster = false" | $(SUDO) tee /etc/postgresql-common/createcluster.d/sluice-no-main.conf >/dev/null && \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@for b in "$$(pg_config --bindir 2>/dev/null)" /usr/lib/postgresql/*/bin; do \
		[ -x "$$b/postgres" ] && { "$$b/postgres" --version; break; }; done

.PHONY: check
check: ## gofmt, go vet and sluice check of the shipped config
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@# Built as the image builds it (static, -trimpath), so the image test
	@# and the deploy tests find every package of it compiled already.
	CGO_ENABLED=0 $(GO) build -trimpath -o .tmp/sluice-check ./cmd/sluice
	./.tmp/sluice-check check -config config.yaml

# golangci-lint, pinned, built into a directory of the repository's own
# (gitignored) when missing or of another version.
GOLANGCI_VERSION := 2.15.0
LINT_BIN         := $(CURDIR)/.tmp/bin
GOLANGCI         := $(LINT_BIN)/golangci-lint

.PHONY: lint-install
lint-install:
	@"$(GOLANGCI)" version 2>/dev/null | grep -q "version $(GOLANGCI_VERSION) " || { \
		echo "installing golangci-lint v$(GOLANGCI_VERSION) into $(LINT_BIN)"; \
		GOBIN=$(LINT_BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v$(GOLANGCI_VERSION); }

.PHONY: lint
lint: lint-install ## golangci-lint (pinned; .golangci.yml), on every file including -tags integration ones
	"$(GOLANGCI)" run ./...

.PHONY: test
test: deps check lint ## install test servers, then run every test (unit and integration) with the race detector
	@# Build every test binary in parallel, then run them one package at a
	@# time: the suites start real servers and measure answers against
	@# timeouts, and two busy packages on a 2-core machine slow each other.
	$(GO) test -race -tags integration -count=1 -run '^$$' ./... >/dev/null
	SLUICE_REQUIRE_PROMTOOL=1 SLUICE_PROMTOOL=$(PROMTOOL) $(GO) test -race -tags integration -count=1 -p 1 -timeout 12m ./...

.PHONY: test-integration
test-integration: test ## the same as test: the real-server suites are built with -tags integration

# Operating systems the unit tests must build on (they run on Linux here).
CROSS_GOOS := darwin windows

.PHONY: test-unit
test-unit: ## tests that need no Redis, Postgres or root, on any OS; then a cross-compile check
	$(GO) test -count=1 ./...
	@# One go test -c per OS builds every package's test binary in
	@# parallel into a scratch directory (-o dir/ takes several packages).
	@for os in $(CROSS_GOOS); do \
		echo "GOOS=$$os go test -c ./..."; \
		rm -rf .tmp/cross && mkdir -p .tmp/cross && \
		GOOS=$$os $(GO) test -c -o .tmp/cross/ ./... >/dev/null || exit 1; \
	done; rm -rf .tmp/cross

.PHONY: test-short
test-short: ## quick run: no race detector, long tests skipped
	$(GO) test -short -count=1 ./...

.PHONY: bench
bench: deps ## start Redis and Sluice on loopback, run the standard load scenarios, reports in bench-reports/
	$(GO) run ./bench/suite -out bench-reports $(BENCHFLAGS)

.PHONY: bench-micro
bench-micro: ## micro-benchmarks of matching and decisions
	$(GO) test -run '^$$' -bench . -benchmem ./limiter/... ./server/...

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	$(GO) test -run '^$$' -fuzz FuzzParseLimitFile -fuzztime $${FUZZTIME:-30s} ./limiter/
	$(GO) test -run '^$$' -fuzz FuzzAppendKey -fuzztime $${FUZZTIME:-30s} ./limiter/
	$(GO) test -run '^$$' -fuzz FuzzParseOverride -fuzztime $${FUZZTIME:-30s} ./server/
	$(GO) test -run '^$$' -fuzz FuzzRequest -fuzztime $${FUZZTIME:-30s} ./server/
	$(GO) test -run '^$$' -fuzz FuzzWireRequest -fuzztime $${FUZZTIME:-30s} ./server/internal/wire/
	$(GO) test -run '^$$' -fuzz '^FuzzScanRequest$$' -fuzztime $${FUZZTIME:-30s} ./server/internal/wire/
	$(GO) test -run '^$$' -fuzz '^FuzzScanJSONRequest$$' -fuzztime $${FUZZTIME:-30s} ./server/
	$(GO) test -run '^$$' -fuzz FuzzVerdict -fuzztime $${FUZZTIME:-30s} ./bench/
	$(GO) test -run '^$$' -fuzz FuzzConfig -fuzztime $${FUZZTIME:-30s} ./cmd/sluice/internal/config/
	$(GO) test -run '^$$' -fuzz '^FuzzSecretsNeverShown$$' -fuzztime $${FUZZTIME:-30s} ./cmd/sluice/
	$(GO) test -run '^$$' -fuzz FuzzWalk -fuzztime $${FUZZTIME:-30s} ./limiter/yamlconf/

.PHONY: abtest
abtest: build ## alternated A/B runs of bin/sluice: ABFLAGS="-a A.yaml -b B.yaml" (see docs/performance.md)
	$(GO) run ./bench/abtest -bin $(BIN) $(ABFLAGS)

.PHONY: memflood
memflood: build ## peak RSS of bin/sluice under floods of empty descriptors (gRPC, /json)
	$(GO) run ./bench/memflood -bin $(BIN) -config config.yaml -mode grpc
	$(GO) run ./bench/memflood -bin $(BIN) -config config.yaml -mode json

.PHONY: tidy
tidy: ## go mod tidy
	$(GO) mod tidy

.PHONY: ci
ci: test ## what CI runs
