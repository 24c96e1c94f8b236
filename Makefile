# Confidential Model Loader — developer entry points.
#
#   make build           build bin/kbs, bin/kbsctl, bin/cml-loader
#   make test            everything CI checks (the README's test command)
#   make demo            the main job end to end on embedded defaults
#   make bench           benchmarks, printed as a small table
#   make generate        regenerate the gRPC code from proto/
#   make check-generate  fail if regenerating would change anything

GO        ?= go
TOOLS_BIN := $(CURDIR)/.tools/bin
export PATH := $(TOOLS_BIN):$(PATH)

.PHONY: all build test vet fmt-check gotest fuzz-smoke lint generate check-generate tools demo bench clean test-deploy test-spire images

all: build

build:
	@mkdir -p bin
	$(GO) build -trimpath -o bin/ ./cmd/kbs ./cmd/kbsctl ./cmd/cml-loader

test: vet fmt-check lint check-generate gotest fuzz-smoke test-deploy test-spire

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needs to run on:"; echo "$$out"; exit 1; fi

gotest:
	$(GO) test -race -count=1 ./...

# Each fuzz target runs briefly so CI catches a regression in a parser.
fuzz-smoke:
	@scripts/fuzz-smoke.sh

tools:
	@scripts/install-tools.sh

lint: tools
	buf lint
	buf format --diff --exit-code

generate: tools
	buf generate

check-generate: generate
	@if [ -n "$$(git status --porcelain -- proto)" ]; then \
		echo "generated code is out of date; run 'make generate' and commit:"; \
		git status --porcelain -- proto; exit 1; fi

# Helm charts, manifests, SPIRE registrations and Dockerfiles (no cluster or Docker needed).
test-deploy:
	@scripts/check-deploy.sh

# kbs, kbsctl and cml-loader get their SVIDs from a real SPIRE server and agent
# (v1.13.3, built once into ~/.cache/cml-tools; see docs/spire.md).
test-spire:
	@scripts/spire/test.sh

IMAGE_REGISTRY ?= ghcr.io/cml-project
IMAGE_TAG      ?= dev
# Container images of the three binaries (needs a Docker engine with BuildKit).
images:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		for n in kbs kbsctl cml-loader; do \
			DOCKER_BUILDKIT=1 docker build -f deploy/docker/$$n.Dockerfile -t $(IMAGE_REGISTRY)/$$n:$(IMAGE_TAG) . || exit 1; \
		done; \
	else \
		echo "images: no Docker engine here (docker info failed). On a machine with one, from the repo root:"; \
		echo "  docker build -f deploy/docker/NAME.Dockerfile -t $(IMAGE_REGISTRY)/NAME:$(IMAGE_TAG) .   (NAME: kbs, kbsctl, cml-loader)"; \
		echo "make test-deploy still checks the Dockerfiles without an engine."; \
		exit 1; \
	fi

demo: build
	@scripts/demo.sh

bench: build
	@scripts/bench.sh

clean:
	rm -rf bin .tools
