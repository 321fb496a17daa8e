# The operator's image, for those with a Docker engine (or BuildKit, kaniko, ...):
#
#   docker build -t ghcr.io/clouddeck/clouddeck:dev .
#
# The same layout as the image hack/cluster assembles for the local cluster without one
# (`hack/cluster operator-image`): the release binary at /usr/local/bin/clouddeck, run as
# the unprivileged user 65532 on a base with only glibc, libgcc_s and CA certificates.
# The chart runs it with a read-only root filesystem and every capability dropped.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin clouddeck

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/clouddeck /usr/local/bin/clouddeck
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/clouddeck"]
