# sluice as a FROM scratch image, for linux/amd64 and linux/arm64:
#   docker buildx build --platform linux/amd64,linux/arm64 -t sluice .
# The build stage runs on the builder's own platform and cross-compiles with musl, exactly as
# `make ARCH=...` does on a developer's machine.
FROM --platform=$BUILDPLATFORM debian:trixie-slim AS build
ARG TARGETARCH
WORKDIR /src
COPY . .
RUN set -eu; \
    case "$TARGETARCH" in amd64) arch=x86_64 ;; arm64) arch=aarch64 ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; esac; \
    apt-get update && apt-get install -y --no-install-recommends make && \
    vendor/deps.sh build "$arch" && \
    make ARCH="$arch" && \
    mkdir -p /out && cp "build/$arch/sluice" /out/sluice

FROM scratch
COPY --from=build /out/sluice /sluice
COPY conf/ /conf/
# The embedded default config listens on 127.0.0.1; in a container it must listen outside.
ENV SLUICE_LISTEN=0.0.0.0:8080
USER 65534
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD ["/sluice", "--healthcheck"]
ENTRYPOINT ["/sluice"]
