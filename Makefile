# Lockdown's build entry points. Everything runs from a fresh clone:
# `make test` and `make run` build what they need first.

SHELL := bash
BIN   := $(CURDIR)/.bin
export LOCKDOWN_BIN_DIR := $(BIN)

# Go modules of the workspace (go.work). The tools modules under
# deploy/tools are deliberately not part of it.
MODULES  := pkg/events pkg/platform services/containment services/assessor services/rotator services/notifier cmd/lockdown deploy testkit
SERVICES := containment assessor rotator notifier
PKGS     := $(foreach m,$(MODULES),github.com/lockdown/lockdown/$(m)/...)

# How long the decoder is fuzzed by `make test` (CI) and `make fuzz`.
# An execution count, not a duration: a duration races Go's fuzz coordinator
# at the deadline on a loaded machine (golang/go#75804, fixed in Go 1.27) and
# fails with "context deadline exceeded" without any failing input.
FUZZTIME ?= 1000000x
# Integration tests start real servers: keep two packages at a time on
# a 2-core machine.
TEST_PARALLEL ?= 2
# The long system tests of a package (t.Parallel: each its own stack, none
# touching the process environment) run side by side: they mostly wait —
# for outages, SIGKILLed services coming back, key holders — so eight stacks
# at once cost little more than one (docs/benchmarks.md, "make test").
TEST_SYSTEMS ?= 8

.PHONY: all tools postgres dns chromium build test fuzz lint docs run dev bench chaos redteam clean

all: build

## tools: build the real servers into .bin (only what is missing) and make sure PostgreSQL, Knot DNS and Chromium are installed
tools: $(BIN)/vault $(BIN)/nats-server $(BIN)/jaeger $(BIN)/mailpit postgres dns chromium

# The servers and the linter are built from their pinned tools modules
# through a cache every clone on this machine shares (build-tool.sh): a
# second clone copies them instead of building them again.
$(BIN)/vault: deploy/tools/vault/go.mod deploy/tools/vault/go.sum
	@echo "Vault v1.21.0: from the tools cache, or built (large: ~10-15 min cold on 2 cores)"
	deploy/tools/build-tool.sh deploy/tools/vault github.com/hashicorp/vault $@

$(BIN)/nats-server: deploy/tools/servers/go.mod deploy/tools/servers/go.sum
	deploy/tools/build-tool.sh deploy/tools/servers github.com/nats-io/nats-server/v2 $@

$(BIN)/jaeger: deploy/tools/servers/go.mod deploy/tools/servers/go.sum
	deploy/tools/build-tool.sh deploy/tools/servers github.com/jaegertracing/jaeger/cmd/jaeger $@

$(BIN)/mailpit: deploy/tools/servers/go.mod deploy/tools/servers/go.sum
	deploy/tools/build-tool.sh deploy/tools/servers github.com/axllent/mailpit $@

$(BIN)/golangci-lint: deploy/tools/lint/go.mod deploy/tools/lint/go.sum
	deploy/tools/build-tool.sh deploy/tools/lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint $@

postgres:
	@deploy/tools/ensure-postgres.sh

dns:
	@deploy/tools/ensure-knot.sh

# The console's test drives the web console in a real headless Chromium.
chromium:
	@deploy/tools/ensure-chromium.sh

## build: the four services and the lockdown CLI into .bin
build:
	@mkdir -p $(BIN)
	@for s in $(SERVICES); do go build -o $(BIN)/$$s ./services/$$s || exit 1; done
	go build -o $(BIN)/lockdown ./cmd/lockdown
	go build -o $(BIN)/lockdown-drill ./cmd/lockdown/lockdown-drill

## test: every test of every module against the real servers, then the decoder fuzz
test: tools build
	go test -count=1 -p $(TEST_PARALLEL) -parallel $(TEST_SYSTEMS) -timeout 45m $(PKGS)
	$(MAKE) fuzz

## fuzz: fuzz the CloudEvents decoder for FUZZTIME executions
fuzz:
	go test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) github.com/lockdown/lockdown/pkg/events

## lint: golangci-lint (.golangci.yml) and go mod tidy -diff in every module
# golangci-lint lints one module at a time: it runs in each module's
# directory, with the workspace (go.work) as the build sees it. Its
# formatters (gofmt, goimports) and govet replace the former `gofmt -l` and
# `go vet` steps.
# `go mod tidy` ignores go.work: it tidies the module alone, finding the
# other Lockdown modules it requires through the replace directives of its
# go.mod, as the Dockerfiles' GOWORK=off builds do. So `-diff` works in each
# module as it is; GOWORK=off only states it (and keeps it so should tidy
# ever become workspace-aware). It prints the diff and fails when a go.mod
# or go.sum is not tidy (fix: `go mod tidy` in that module).
# Every module is checked before the target fails, so one run shows all.
lint: $(BIN)/golangci-lint
	@failed=; \
	for m in $(MODULES); do \
		echo "golangci-lint: $$m"; \
		(cd $$m && $(BIN)/golangci-lint run ./...) || failed="$$failed $$m"; \
	done; \
	for m in $(MODULES); do \
		(cd $$m && GOWORK=off go mod tidy -diff) || failed="$$failed $$m(go mod tidy)"; \
	done; \
	if [ -n "$$failed" ]; then echo "make lint: failed in:$$failed"; exit 1; fi

## bench: benchmarks on the real local stack (figures go to docs/benchmarks.md)
bench: tools
	go test -count=1 -run '^$$' -bench BenchmarkContainmentLatency -benchtime 30x -timeout 30m github.com/lockdown/lockdown/services/containment/internal/app
	go test -count=1 -run '^$$' -bench BenchmarkRevocation -benchtime 1x -timeout 30m github.com/lockdown/lockdown/services/containment/internal/app
	go test -count=1 -run '^$$' -bench BenchmarkAssessment -benchtime 1x -timeout 30m github.com/lockdown/lockdown/services/assessor/internal/app
	$(MAKE) build
	go test -count=1 -run '^$$' -bench BenchmarkRotation -benchtime 1x -timeout 60m github.com/lockdown/lockdown/services/rotator/internal/app
	go test -count=1 -run '^$$' -bench BenchmarkNotification -benchtime 1x -timeout 20m github.com/lockdown/lockdown/services/notifier/internal/app

## docs: regenerate the generated docs (events, schemas, NATS users, config tables)
docs:
	go test -count=1 -run '^TestDocs$$' github.com/lockdown/lockdown/pkg/events -update
	go test -count=1 -run '^TestConfig$$' github.com/lockdown/lockdown/services/containment/internal/app -update
	go test -count=1 -run '^TestConfig$$' github.com/lockdown/lockdown/services/assessor/internal/app -update
	go test -count=1 -run '^(TestConfig|TestRotatorPolicy)$$' github.com/lockdown/lockdown/services/rotator/internal/app -update
	go test -count=1 -run '^TestConfig$$' github.com/lockdown/lockdown/services/notifier/internal/app -update
	go test -count=1 -run '^TestRecoveryPolicy$$' github.com/lockdown/lockdown/services/containment/internal/recovery -update
	go test -count=1 -run '^TestPsqlFile$$' github.com/lockdown/lockdown/pkg/platform/pgroles -update

## redteam: the attacks of docs/security.md on the real stack (make test runs
## them too): forged message ids, every NATS user against its permissions,
## the HTTP intake (replay, tampering, unsigned and oversize bodies,
## auto-seal policy), malicious ids, a Vault root intruder who plants
## persistence and fights during the incident (TestRedTeam, TestAuditGate,
## TestLeastPrivilege), and the inputs that used to stall an incident:
## oversized and poison messages, forged completions, a tenant that never
## answers (docs/security.md, "No input … stalls the response")
redteam: tools build
	go test -count=1 -timeout 30m -run '^(TestMessageIDPoisoning|TestBusPermissions|TestCLI|TestOutsideText|TestPostgresOutage|TestGuideNamesWhatExists|TestGuideInstallSteps|TestPlan)$$' github.com/lockdown/lockdown/cmd/lockdown/internal/cli
	go test -count=1 -timeout 30m -run '^(TestContainment|TestRedTeam|TestRecovery|TestTimelineIDs|TestBreachAfterRestore|TestStartRefusesMissingFiles)$$' github.com/lockdown/lockdown/services/containment/internal/app
	go test -count=1 -timeout 30m -run '^(TestAuditGate|TestDKIMAnswerThatNeverSucceeds|TestPlatformCatalogue|TestRotatorPolicy)$$' github.com/lockdown/lockdown/services/rotator/internal/app
	go test -count=1 -timeout 30m -run '^TestNotifierTenantDeadline$$' github.com/lockdown/lockdown/services/notifier/internal/app
	go test -count=1 -timeout 30m -run '^(TestLeastPrivilege|TestNATSClusterRoutes)$$' github.com/lockdown/lockdown/testkit/localstack
	go test -count=1 -timeout 30m -run '^(TestOutbox|TestRelayDeletesOnlyWhatItPublished|TestRelayParksWhatJetStreamRefuses|TestRelayConcurrentWriters)$$' github.com/lockdown/lockdown/pkg/platform/outbox
	go test -count=1 -timeout 10m -run '^TestLockOnlyTheOwnerTakes$$' github.com/lockdown/lockdown/pkg/platform/migrate
	go test -count=1 -run '^TestWitness$$' github.com/lockdown/lockdown/services/containment/internal/recovery
	go test -count=1 -run '^TestCompose$$' github.com/lockdown/lockdown/deploy
	go test -count=1 -run '^(TestIDs|TestEventBounds)$$' github.com/lockdown/lockdown/pkg/events
	go test -count=1 -run '^TestConsumer$$' github.com/lockdown/lockdown/pkg/platform/stream
	go test -count=1 -run '^TestSyntheticIncident$$' github.com/lockdown/lockdown/services/containment/internal/reporting

## chaos: the fault-injection suite at full size: 300 tenants, two rotators,
## 3-minute outages, three seeds of random SIGKILLs (make test runs a
## shortened pass); the table goes to tmp/chaos-table.md (docs/reliability.md)
CHAOS_TENANTS ?= 300
CHAOS_OUTAGE ?= 3m
CHAOS_SEEDS ?= 3
chaos: tools build
	@mkdir -p tmp
	LOCKDOWN_CHAOS_TENANTS=$(CHAOS_TENANTS) LOCKDOWN_CHAOS_OUTAGE=$(CHAOS_OUTAGE) LOCKDOWN_CHAOS_SEEDS=$(CHAOS_SEEDS) LOCKDOWN_CHAOS_TABLE=$(CURDIR)/tmp/chaos-table.md \
		go test -count=1 -run '^TestChaos$$' -timeout 120m -v github.com/lockdown/lockdown/cmd/lockdown/internal/cli
	@cat tmp/chaos-table.md

## run: Lockdown's main job on the local stack, ending by itself (see README)
run: tools build
	$(BIN)/lockdown-drill

## dev: the drill, then the stack kept running until Ctrl-C
dev: tools build
	$(BIN)/lockdown-drill --keep

clean:
	rm -rf $(BIN)
