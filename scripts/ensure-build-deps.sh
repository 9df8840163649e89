#!/usr/bin/env bash
# Checks for a Rust toolchain and installs the system packages the build needs when missing:
# a C toolchain, cmake + nasm for the bundled libjpeg-turbo (the turbojpeg crate), and the
# HEVC and AV1 decoders (libde265, dav1d) the bundled libheif decodes HEIC and AVIF with, and
# libtiff (the TIFF layouts the pure-Rust decoders refuse, processor/libtiff).
set -euo pipefail
command -v cargo >/dev/null || { echo "needs a Rust toolchain (https://rustup.rs)" >&2; exit 1; }
missing=""
{ command -v cc && command -v c++; } >/dev/null || missing="$missing build-essential"
command -v cmake >/dev/null || missing="$missing cmake"
command -v nasm >/dev/null || missing="$missing nasm"
pkg_missing() { ! dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for pkg in pkg-config libde265-dev libdav1d-dev libtiff-dev; do
    if pkg_missing "$pkg"; then missing="$missing $pkg"; fi
done
if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
