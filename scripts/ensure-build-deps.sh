#!/usr/bin/env bash
# Checks for a Rust toolchain and installs the system packages the build needs when missing:
# a C toolchain, and cmake + nasm for the bundled libjpeg-turbo (the turbojpeg crate).
set -euo pipefail
command -v cargo >/dev/null || { echo "needs a Rust toolchain (https://rustup.rs)" >&2; exit 1; }
missing=""
command -v cc >/dev/null || missing="$missing build-essential"
command -v cmake >/dev/null || missing="$missing cmake"
command -v nasm >/dev/null || missing="$missing nasm"
if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
