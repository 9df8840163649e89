#!/usr/bin/env bash
# Builds and starts LITE Gallery on the embedded default: a local nats-server child process
# and local storage under ./data. Extra arguments go to `gallery up` (see `gallery up --help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

command -v cargo >/dev/null || { echo "needs a Rust toolchain (https://rustup.rs)" >&2; exit 1; }
# A C toolchain, and cmake + nasm for the bundled libjpeg-turbo (the turbojpeg crate).
missing=""
command -v cc >/dev/null || missing="$missing build-essential"
command -v cmake >/dev/null || missing="$missing cmake"
command -v nasm >/dev/null || missing="$missing nasm"
if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
if [ -z "${GALLERY_NATS_URL:-}" ]; then
    GALLERY_NATS_SERVER="$("$ROOT/scripts/ensure-nats-server.sh")"
    export GALLERY_NATS_SERVER
fi
cargo build --release --bin gallery
exec "$ROOT/target/release/gallery" up "$@"
