# canga: see README.md. `make demo` builds canga and runs it end to end;
# `make test` runs every test (installing missing Debian tools first).

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME ?= 60s
# The fuzzer minimizes every input that finds new code; 100 executions is
# enough to trim it, where the default of a minute each stalls a run while
# the first hundred finds are trimmed.
FUZZMINIMIZETIME ?= 100x
BIN      := bin/canga

.PHONY: all build static test test-short soak bench fuzz demo deps clean man completion dist deb cross

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/canga

# One static binary: no cgo, no libc.
static:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(BIN) ./cmd/canga

deps:
	scripts/deps.sh

# Man pages (canga.1, canga-COMMAND.1) from the command model, in bin/man.
man: build
	rm -rf bin/man && $(BIN) __man bin/man

# Completion scripts for bash, zsh and fish, in bin/completion.
completion: build
	mkdir -p bin/completion
	$(BIN) completion bash >bin/completion/canga.bash
	$(BIN) completion zsh >bin/completion/_canga
	$(BIN) completion fish >bin/completion/canga.fish

# A release in DIST: static, reproducible tarballs and .debs for linux/amd64
# and linux/arm64, SHA256SUMS, and SHA256SUMS.sig when KEY=an SSH key is
# given (verify: docs/install.md).
DIST ?= dist
KEY  ?=
dist:
	scripts/deps.sh release
	scripts/dist.sh '$(VERSION)' '$(DIST)' '$(KEY)'

# The Debian package alone: DIST/canga_VERSION_DEB_ARCH.deb.
DEB_ARCH ?= amd64
deb:
	scripts/deps.sh release
	ARCHES='$(DEB_ARCH)' DEB_ONLY=1 scripts/dist.sh '$(VERSION)' '$(DIST)'

# What builds for other systems (the Linux-only parts say so at run time).
cross:
	GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./cmd/canga
	GOOS=windows GOARCH=amd64 $(GO) build -o /dev/null ./cmd/canga

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

test: deps
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) test -count=1 -timeout 60m ./...

test-short:
	$(GO) test -short -count=1 ./...

# The soak (cmd/canga TestSoak): 8 canga processes doing random writes to
# one repository and one canga serve, with SIGKILLs, for DURATION.
DURATION ?= 60s
soak:
	CANGA_SOAK=$(DURATION) $(GO) test -count=1 -run '^TestSoak$$' -timeout 0 -v ./cmd/canga

# The inflate benchmark decodes every compressed cluster of bench/mkimage.sh's
# disk with canga's decoder and with klauspost/compress/flate; run.sh puts
# its medians into bench/RESULTS.md. BEFORE=OLDCANGA also runs an earlier
# binary in turn with this one and adds a before-and-after table.
bench: deps static
	$(GO) test -run '^$$' -bench . -skip '^BenchmarkInflateClusters$$' -benchmem -benchtime 3x ./qcow2/... ./cas/...
	$(GO) test -run '^$$' -bench '^BenchmarkInflateClusters$$' -count 5 -timeout 30m ./qcow2/ | tee bin/inflate-bench.txt
	INFLATE_BENCH=$(CURDIR)/bin/inflate-bench.txt bench/run.sh $(BIN)

# Every fuzz target for FUZZTIME each, FUZZJOBS at a time (default 1); a
# summary line per target, logs in bin/fuzz/ (see scripts/fuzz.sh).
# FUZZPKGS and FUZZRUN (a regular expression) choose fewer targets.
FUZZJOBS ?= 1
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZMINIMIZETIME=$(FUZZMINIMIZETIME) FUZZJOBS=$(FUZZJOBS) FUZZRUN='$(FUZZRUN)' scripts/fuzz.sh $(FUZZPKGS)

demo: deps static
	scripts/demo.sh $(BIN)

clean:
	rm -rf bin dist
