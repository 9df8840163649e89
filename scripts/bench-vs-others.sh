#!/usr/bin/env bash
# Our renderer, libvips and Pillow on the same photos, back to back, one thread each:
#   scripts/bench-vs-others.sh DIR [RUNS]
# Prints `gallery bench` (ours), then scripts/compare-render.sh (Pillow, libvips at its best,
# libvips per size) with the PSNR and SSIM of every method's big_1920 against a float Lanczos reference,
# ours included.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:?usage: bench-vs-others.sh DIR [RUNS]}"
RUNS="${2:-5}"
cd "$ROOT"
cargo build -q --release --bin gallery
cargo build -q --release -p gallery-render --example dump
OURS="$(mktemp -d)"
trap 'rm -rf "$OURS"' EXIT
for f in "$DIR"/*.jpg "$DIR"/*.jpeg "$DIR"/*.JPG; do
    [ -f "$f" ] || continue
    stem="$(basename "${f%.*}")"
    ./target/release/examples/dump "$f" "$OURS/$stem" >/dev/null
    cp "$OURS/$stem/big_1920.jpg" "$OURS/$stem.big_1920.jpg"
done
echo "== ours (gallery bench, $RUNS runs per photo)"
./target/release/gallery bench "$DIR" --runs "$RUNS"
echo "== others (scripts/compare-render.sh)"
scripts/compare-render.sh "$DIR" "$RUNS" --quality --ours "$OURS"
