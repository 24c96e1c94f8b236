# syntax=docker/dockerfile:1
# Image of cml-loader, the loader (a Kubernetes initContainer). Build from the repository root:
#   docker build -f deploy/docker/cml-loader.Dockerfile -t ghcr.io/cml-project/cml-loader:dev .
# The final image holds only the static binary (distroless, no shell) and
# runs as UID/GID 65532 ("nonroot").

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so editing the code does not re-download modules.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Static (CGO_ENABLED=0) so it runs on distroless/static; -trimpath and no
# VCS stamp for reproducible builds; -s -w drops symbols and DWARF.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go build -trimpath -ldflags "-s -w" -o /out/cml-loader ./cmd/cml-loader

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cml-loader /cml-loader
USER 65532:65532
ENTRYPOINT ["/cml-loader"]
