# nlb — see README.md. Targets that need root say so when run without it.
GO        ?= go
BIN       := bin
PKGS      := ./...
# The full suite (pure, kernel and namespace tests) must stay well under
# 15 minutes on a 2-core machine.
TEST_TIMEOUT ?= 14m

.PHONY: deps-quiet install uninstall package all build test test-pure demo bench generate check-generated lint fuzz soak mutate clean deps need-root

all: build

# VERSION is stamped into both binaries (nlbd --version, nlbctl version,
# the nlb_build_info metric, each host's version in query).
# A release tag (vX.Y.Z) names itself; between releases it is the next
# release's number with the commit (0.8.0~git84d4864, which sorts before
# 0.8.0 for dpkg and rpm alike).
BASE_VERSION := 0.8.0
VERSION   ?= $(shell v=$$(git describe --tags --exact-match 2>/dev/null) && echo $${v\#v} || echo $(BASE_VERSION)~git$$(git rev-parse --short HEAD 2>/dev/null || echo unknown))
LDFLAGS   := -X github.com/nlbproject/nlb/internal/version.Version=$(VERSION)

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/nlbd ./cmd/nlbd
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/nlbctl ./cmd/nlbctl

# install puts the binaries, the systemd unit (running $(PREFIX)/sbin/nlbd)
# and an example config in place (PREFIX=/usr/local); it never starts
# anything. uninstall removes exactly what install put, except the
# configuration in /etc/nlb. Packages: make package.
PREFIX ?= /usr/local
install: build
	install -D -m 0755 $(BIN)/nlbd $(DESTDIR)$(PREFIX)/sbin/nlbd
	install -D -m 0755 $(BIN)/nlbctl $(DESTDIR)$(PREFIX)/bin/nlbctl
	install -d -m 0755 $(DESTDIR)/etc/systemd/system
	sed -e 's|/usr/sbin/nlbd|$(PREFIX)/sbin/nlbd|g' -e 's|/usr/bin/nlbctl|$(PREFIX)/bin/nlbctl|g' deploy/nlbd.service > $(DESTDIR)/etc/systemd/system/nlbd.service
	chmod 0644 $(DESTDIR)/etc/systemd/system/nlbd.service
	install -d -m 0700 $(DESTDIR)/etc/nlb
	test -e $(DESTDIR)/etc/nlb/nlb.yaml || install -m 0600 examples/host1.yaml $(DESTDIR)/etc/nlb/nlb.yaml
	install -D -m 0644 docs/operations.md $(DESTDIR)$(PREFIX)/share/doc/nlb/operations.md

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/nlbd $(DESTDIR)$(PREFIX)/bin/nlbctl \
		$(DESTDIR)/etc/systemd/system/nlbd.service $(DESTDIR)$(PREFIX)/share/doc/nlb/operations.md
	-rmdir $(DESTDIR)$(PREFIX)/share/doc/nlb 2>/dev/null

# package builds dist/nlb_VERSION_amd64.deb and dist/nlb-VERSION.x86_64.rpm
# with nfpm (a Go tool of this module: no other packaging software needed):
# FHS paths, man pages generated from the commands, shell completions.
PKGDIR := build/pkg
package: build
	rm -rf $(PKGDIR) dist && mkdir -p $(PKGDIR)/man $(PKGDIR)/completions dist
	$(GO) run -tags mangen -ldflags "$(LDFLAGS)" ./cmd/nlbctl man $(PKGDIR)/man
	$(GO) run -tags mangen -ldflags "$(LDFLAGS)" ./cmd/nlbd man $(PKGDIR)/man
	$(BIN)/nlbctl completion bash > $(PKGDIR)/completions/nlbctl.bash
	$(BIN)/nlbctl completion zsh > $(PKGDIR)/completions/_nlbctl
	$(BIN)/nlbctl completion fish > $(PKGDIR)/completions/nlbctl.fish
	NLB_VERSION=$(VERSION) $(GO) tool nfpm package -f deploy/nfpm.yaml -p deb -t dist/
	NLB_VERSION=$(VERSION) $(GO) tool nfpm package -f deploy/nfpm.yaml -p rpm -t dist/
	@ls -l dist/

# deps installs what a fresh Debian machine lacks (needs root for apt).
deps:
	./scripts/deps.sh

need-root:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "this target needs root (eBPF, network namespaces): run it as root, e.g. sudo make $(MAKECMDGOALS)"; exit 1; fi

# test runs every test. Kernel and namespace tests need root; without root
# they skip and say why, so run `sudo make test` (CI runs as root).
test: lint
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	$(MAKE) --no-print-directory check-generated
	./scripts/fuzz.sh $(TEST_FUZZTIME)

# Every fuzz target runs this many inputs in make test (and CI). A count, not
# a duration: Go 1.26's coordinator can fail a duration-bounded run with a
# spurious "context deadline exceeded" at the deadline (go.dev/issue/75804).
TEST_FUZZTIME ?= 100000x

test-pure:
	$(GO) test -count=1 $(PKGS)

# demo runs a 3-host cluster in network namespaces with live traffic, a
# host failure and a drain, and removes everything afterwards.
demo: need-root deps-quiet build
	$(GO) run ./internal/demo $(BIN)/nlbd

deps-quiet:
	@./scripts/deps.sh >/dev/null

# bench runs the benchmarks (about 5 minutes, root) and regenerates
# docs/benchmarks.md from their figures (raw lines in docs/bench-results.txt).
bench: need-root deps-quiet
	./scripts/bench.sh

# generate rebuilds the eBPF objects from filter/datapath/bpf/*.c (needs clang).
generate:
	cd filter/datapath && $(GO) generate ./...

# check-generated proves the committed eBPF objects match the C source.
check-generated:
	./scripts/check-generated.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

FUZZTIME ?= 60s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# soak runs the convergence simulation over many more seeds (about 2.5 s
# each) and the 10-minute false-eviction run. SOAK_SEEDS sets the count.
SOAK_SEEDS ?= 500
# soak also runs 5 minutes of a namespace cluster with both cores busy and
# 10 % heartbeat loss (NLB_SOAK_DURATION), written to docs/bench-soak.txt for
# the next make bench report.
soak: need-root deps-quiet
	NLB_SIM_SEEDS=$(SOAK_SEEDS) $(GO) test -count=1 -timeout 60m -run 'TestSimRandom|TestSimLarge' -v ./convergence | grep -E 'seed|worst|n=|^(ok|FAIL|---)'
	$(GO) test -run '^$$' -bench 'BenchmarkFailover/loss10' -benchtime 3x -timeout 30m ./convergence
	$(GO) test -run '^$$' -bench 'BenchmarkSoakFalseEvictions' -benchtime 1x -timeout 30m -v ./bench | tee docs/bench-soak.txt
	$(GO) test -run '^$$' -bench 'BenchmarkDetectionCurve' -benchtime 1x -timeout 30m -v ./bench | tee docs/bench-curve.txt

# mutate runs mutation testing: gremlins over the pure packages (filter's
# model, heartbeat, remote, config, health, and convergence with its fast
# simulation subset, build tag mutate), then the hand mutations of
# scripts/mutations.txt, and writes docs/mutation.md (score per package,
# surviving mutants, equivalent ones with why). Long: about an hour on 2
# cores; MUTATE_PACKAGES=filter,config for a part.
MUTATE_PACKAGES ?= filter,heartbeat,remote,config,health,convergence
mutate:
	$(GO) run ./internal/mutate -packages $(MUTATE_PACKAGES)

clean:
	rm -rf $(BIN) build dist
