# syntax=docker/dockerfile:1
# A static (musl) binary in a distroless, non-root image.
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin globaldns \
 && cp target/release/globaldns /globaldns

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /globaldns /usr/local/bin/globaldns
USER 65532:65532
EXPOSE 5353/udp 5353/tcp 8080/tcp
ENTRYPOINT ["/usr/local/bin/globaldns"]
CMD ["serve", "--in-cluster", "--listen=[::]:5353", "--admin=[::]:8080"]
