#!/usr/bin/env bash
# Prints the path of a Garage 2.x binary (the S3-compatible server the S3-mode tests run),
# building it from crates.io when missing: about 8 minutes on 2 cores, once; cargo keeps it
# in ~/.cargo/bin. $GALLERY_GARAGE names an existing binary instead.
set -euo pipefail
WANT=2.5.0
ok() { "$1" --version 2>/dev/null | grep -q "v\?2\."; }
if [ -n "${GALLERY_GARAGE:-}" ] && ok "$GALLERY_GARAGE"; then echo "$GALLERY_GARAGE"; exit 0; fi
if command -v garage >/dev/null && ok "$(command -v garage)"; then command -v garage; exit 0; fi
BIN="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
if [ -x "$BIN" ] && ok "$BIN"; then echo "$BIN"; exit 0; fi
echo "building garage $WANT from crates.io (about 8 minutes, once)" >&2
cargo install garage --version "$WANT" --locked >&2
echo "$BIN"
