# Multi-stage build of the `gallery` binary; the runtime image runs as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN ./scripts/ensure-build-deps.sh && cargo build --release --locked --bin gallery

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libde265-0 libdav1d6 libtiff6 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home gallery
COPY --from=build /src/target/release/gallery /usr/local/bin/gallery
USER gallery
WORKDIR /data
ENV GALLERY_DATA_DIR=/data GALLERY_LISTEN=0.0.0.0:8080
EXPOSE 8080 8081
ENTRYPOINT ["gallery"]
CMD ["api"]
