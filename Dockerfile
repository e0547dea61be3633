# syntax=docker/dockerfile:1
# The build the README's figures come from: a release binary against glibc, built on Debian 12
# (bookworm) and run on distroless/cc-debian12 (the same glibc, libgcc, CA certificates and
# nothing else: no shell, no package manager), as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin globaldns \
 && cp target/release/globaldns /globaldns

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /globaldns /usr/local/bin/globaldns
USER 65532:65532
EXPOSE 5353/udp 5353/tcp 8080/tcp
ENTRYPOINT ["/usr/local/bin/globaldns"]
CMD ["serve", "--in-cluster", "--listen=[::]:5353", "--admin=[::]:8080"]
