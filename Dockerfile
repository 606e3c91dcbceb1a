# nongsan: one binary that runs every service (`serve <name>`), migrations
# (`migrate`) and the all-in-one mode (`up`).

# ---- build -----------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Only what the build needs; see .dockerignore for what stays out.
COPY Cargo.toml Cargo.lock ./
COPY src/ src/
COPY shared/ shared/
COPY services/ services/
COPY migrations/ migrations/
COPY data/ data/
# The benchmark crate is a workspace member (not built here), and the compile-time SQL data
# lets the build check every query without a database.
COPY bench/ bench/
COPY .sqlx/ .sqlx/
ENV SQLX_OFFLINE=true
# Cargo.toml declares the `integration` test target at tests/main.rs; keep the
# manifest's paths valid even though the test is not built here.
COPY tests/ tests/

# Cache the registry and target dir across builds (BuildKit); copy the binary
# out of the cache mount so the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin nongsan \
 && install -D -m 0755 target/release/nongsan /out/nongsan

# ---- runtime ---------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /home/nongsan --shell /usr/sbin/nologin nongsan

COPY --from=builder /out/nongsan /usr/local/bin/nongsan

USER nongsan
WORKDIR /home/nongsan
EXPOSE 8080
ENTRYPOINT ["nongsan"]
CMD ["up"]
