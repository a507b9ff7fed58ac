# gemba — build, test and run. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
# The release version lives in VERSION (semantic, without the v); the commit says which tree it came from.
VERSION ?= v$(shell cat VERSION 2>/dev/null || echo 0.0.0-dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/gemba-io/gemba/agent.Version=$(VERSION) -X github.com/gemba-io/gemba/agent.Commit=$(COMMIT) \
	-X github.com/gemba-io/gemba/hub.Version=$(VERSION) -X github.com/gemba-io/gemba/hub.Commit=$(COMMIT)
TOOLS := $(CURDIR)/.tools
STATICCHECK_VERSION := v0.8.2
TEST_TIMEOUT ?= 25m
BENCH_TIME ?= 1s
BENCH ?= .

.PHONY: help build test lint bench fuzz demo peers clean package

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

build: ## static binaries in bin/, version stamped
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

package: ## gemba-agent .deb and .rpm for amd64 and arm64 in dist/ (nfpm, pinned in scripts/package.sh)
	VERSION=$(VERSION) COMMIT=$(COMMIT) GO=$(GO) bash scripts/package.sh

peers: ## install the real servers the tests use (mosquitto, node-opcua)
	@bash scripts/install-peers.sh

test: peers ## the full test suite (race detector on)
	$(GO) vet ./...
	$(GO) test -race -timeout $(TEST_TIMEOUT) ./...

lint: ## go vet and staticcheck
	$(GO) vet ./...
	@test -x $(TOOLS)/staticcheck || GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(TOOLS)/staticcheck ./...

bench: peers ## benchmarks (figures go to docs/BENCHMARKS.md)
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime $(BENCH_TIME) -timeout 30m ./signal/ ./features/ ./buffer/
	$(GO) test -run '^$$' -bench 'MapJSON|Convert' -benchmem -benchtime $(BENCH_TIME) ./collectors/...
	@# side-by-side runs against real servers time their own rounds: one iteration each
	$(GO) test -run '^$$' -bench 'SideBySide|NodeOPCUA' -benchtime 1x -timeout 30m ./e2e/ ./collectors/...
	$(MAKE) --no-print-directory bench-hub

# The hub's benchmarks against its embedded NATS server (bench/hub): ingest throughput, publish→store
# latency, process RSS with 300k inventory keys, feature published → promotion published (DecideLatency).
# Each round starts its own hub: one iteration each. Before them, the rules' and the engine's CPU
# benchmarks (20-rule set, 10,000 SKUs). BENCH_HUB selects (e.g. BENCH_HUB=Ingest, BENCH_HUB=DecideLatency),
# BENCH_HUB_COUNT repeats, HEAPPROF=file profiles the RSS run's hub.
BENCH_HUB ?= .
BENCH_HUB_COUNT ?= 1
.PHONY: bench-hub
bench-hub: ## hub parts 1-2: ingest, latency, RSS; CEL per rule, 10k SKUs, backtest speed, feature → promotion p99 (docs/BENCHMARKS.md)
	$(GO) test -run '^$$' -bench 'EncodeValue' -benchmem ./hub/state/features/
	$(GO) test -run '^$$' -bench 'Evaluate' -benchmem ./hub/decide/rules/
	$(GO) test -run '^$$' -bench 'EngineEvaluate10kSKUs' -benchmem ./hub/decide/
	$(GO) test -run '^$$' -bench 'BacktestPlantDay' -benchtime 1x ./hub/decide/backtest/
	HUBBENCH_HEAPPROF=$(HEAPPROF) $(GO) test -run '^$$' -bench '$(BENCH_HUB)' -benchtime 1x -count $(BENCH_HUB_COUNT) -timeout 60m ./bench/hub/

FUZZTIME ?= 10s
.PHONY: screenshots bench-console
screenshots: peers ## the console's pages as PNGs in docs/console/, taken by its browser test
	GEMBA_SCREENSHOTS=docs/console $(GO) test -count=1 -run '^TestBrowser$$' ./hub/console/

bench-console: ## every console page with 10,000 SKUs and 100,000 decisions (docs/BENCHMARKS.md, Console)
	$(GO) test -run '^$$' -bench 'Pages' -benchtime 20x -timeout 15m ./hub/console/

fuzz: ## run every fuzzer briefly (FUZZTIME=60s for longer)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg; \
	  done; done

demo: ## the whole system on embedded defaults: plant, agent, NATS, hub, market; promotion, hold, approval, outage (configs/demo/)
	$(GO) run ./cmd/gemba-demo

.PHONY: bench-e2e chaos
bench-e2e: peers ## gemba-agent against a bare paho->NATS bridge, end to end; writes docs/BENCHMARKS.md
	$(GO) run ./bench/e2e $(BENCH_E2E_FLAGS)

chaos: peers ## the full fault suite: agent (NATS outage, SIGKILL, broker and OPC UA restarts, full buffer) and hub (replica SIGKILL, NATS node restart, webhook down, replay burst, rule rollback)
	$(GO) run ./chaos/cmd/gemba-chaos $(CHAOS_FLAGS)

clean:
	rm -rf bin dist
