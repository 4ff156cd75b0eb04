# couponsd: a static binary on a small base image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/couponsd ./cmd/couponsd

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/couponsd /couponsd
ENV COUPONS_ADDR=:8080 COUPONS_DATA_DIR=/data
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["/couponsd"]
