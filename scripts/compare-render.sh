#!/usr/bin/env bash
# Reproducible, single-threaded comparison of image-resize pipelines
# (Pillow as typical Python services use it vs. libvips used well vs. libvips
# the way the vipsthumbnail CLI uses it) on a directory of JPEG photos.
#
# Usage: scripts/compare-render.sh DIR [RUNS] [--quality] [--ours OURS_DIR]
#   RUNS        timed repetitions per photo and method (default 3); the median is kept
#   --quality   also print the PSNR and SSIM of each method's big_1920 against a float reference
#   --ours DIR  include our own outputs (<stem>.big_1920.jpg) in the quality table
#
# The measuring itself is in compare_render.py beside this file; this wrapper only
# pins the tool versions and pins the run to one thread, so that two runs on two
# machines measure the same software doing the same amount of work.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
VENV="$ROOT/.tools/venv"
PY="$VENV/bin/python"

# Exact versions, checked to exist on PyPI for CPython 3.11 / manylinux x86_64.
# pyvips-binary bundles its own libvips (8.18.7), so the result does not depend on
# whatever libvips the distribution happens to ship. cffi/pycparser are pyvips'
# dependencies, pinned so a later release cannot change the binding underneath us.
PINS=(
  "pillow==13.0.0"
  "numpy==2.4.6"
  "cffi==2.1.1"
  "pycparser==3.12"
  "pyvips==3.2.0"
)
VIPS_BINARY_PIN="pyvips-binary==8.18.7"

if [[ ! -x "$PY" ]]; then
  python3 -m venv "$VENV"
fi

# Ask Python (not pip, which is slow and chatty) whether every pin is already met,
# so a warm run needs no network at all. Prints the unmet requirements, if any.
missing() {
  "$PY" - "$@" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for req in sys.argv[1:]:
    name, want = req.split("==")
    try:
        if version(name) != want:
            print(req)
    except PackageNotFoundError:
        print(req)
EOF
}

# Either the bundled-libvips wheel is present, or we are on the apt fallback
# (system libvips42 found by plain pyvips); both are acceptable once set up.
vips_ok() {
  [[ -z "$(missing "${PINS[@]}")" ]] || return 1
  [[ -z "$(missing "$VIPS_BINARY_PIN")" ]] && return 0
  VIPS_CONCURRENCY=1 "$PY" -c 'import pyvips' >/dev/null 2>&1
}

if ! vips_ok; then
  if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}" "$VIPS_BINARY_PIN"; then
    # No pyvips-binary wheel for this platform: use Debian's libvips instead.
    # Results then depend on Debian's libvips version; compare_render.py prints it.
    echo "pyvips-binary unavailable; falling back to Debian libvips42" >&2
    apt-get install -y libvips42 >&2 || { apt-get update >&2 && apt-get install -y libvips42 >&2; }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
  fi
fi

# One thread everywhere. libvips reads VIPS_CONCURRENCY when it starts, so it must be
# in the environment before pyvips is imported; OMP/BLAS variables keep any OpenMP
# or numpy code from quietly using the second core.
export VIPS_CONCURRENCY=1
export OMP_NUM_THREADS=1
export OPENBLAS_NUM_THREADS=1
export MKL_NUM_THREADS=1

# The same allocator settings as the gallery binary (src/main.rs: glibc keeps blocks up to
# 32 MB and 128 MB of free heap instead of returning them to the kernel after every image).
# Measured, they make Pillow and libvips faster too (libvips' best mode about 160 -> 145 ms
# on 12 photos), so every method runs with them. GALLERY_COMPARE_DEFAULT_MALLOC=1 turns
# this off, to see the figures with glibc's defaults.
if [[ -z "${GALLERY_COMPARE_DEFAULT_MALLOC:-}" ]]; then
  export GLIBC_TUNABLES="glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=134217728"
fi

exec "$PY" "$HERE/compare_render.py" "$@"
