#!/usr/bin/env bash
# Builds and starts LITE Gallery on the embedded default: a local nats-server child process
# and local storage under ./data. Extra arguments go to `gallery up` (see `gallery up --help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/ensure-build-deps.sh"
if [ -z "${GALLERY_NATS_URL:-}" ]; then
    GALLERY_NATS_SERVER="$("$ROOT/scripts/ensure-nats-server.sh")"
    export GALLERY_NATS_SERVER
fi
cargo build --release --bin gallery
exec "$ROOT/target/release/gallery" up "$@"
