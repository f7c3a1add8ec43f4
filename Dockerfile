# Multi-stage build of weir: a static musl binary on a distroless base, non-root, matching the
# Helm chart's defaults (user 65532, read-only root filesystem, ports 8080/8443/9901).
FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin weir

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/weir /usr/local/bin/weir
USER 65532:65532
EXPOSE 8080 8443 9901
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["run"]
