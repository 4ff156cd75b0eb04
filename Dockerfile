# syntax=docker/dockerfile:1
#
# couponsd: a static binary (CGO_ENABLED=0) on distroless, running as the
# unprivileged user 65532 with a writable /data (COUPONS_DATA_DIR). /data
# holds the embedded event store and history index when no back end is
# configured, and the generated JWT key (jwt.secret) when COUPONS_JWT_SECRET
# is unset; with production back ends and COUPONS_JWT_SECRET set, nothing
# is written there. Build: docker build -t couponsd .

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/couponsd ./cmd/couponsd \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/couponsd /couponsd
# An empty /data owned by the runtime user: a named volume mounted there is
# initialised from it (ownership included), so the service can write to it.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV COUPONS_ADDR=:8080 COUPONS_DATA_DIR=/data
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["/couponsd"]
