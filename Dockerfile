# syntax=docker/dockerfile:1
# Static tileproxy binary on distroless (CA certificates included, no
# shell, non-root).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tileproxy ./cmd/tileproxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tileproxy /usr/local/bin/tileproxy
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tileproxy"]
CMD ["serve", "-config", "/etc/tileproxy/tileproxy.yaml"]
