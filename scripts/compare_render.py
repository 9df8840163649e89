#!/usr/bin/env python3
"""Single-threaded timing (and optional quality) comparison of resize pipelines.

Run it through scripts/compare-render.sh, which pins the package versions and sets
VIPS_CONCURRENCY=1 before Python starts. Every method renders the same four
"fit inside" versions of each photo and encodes them to JPEG (quality 85) in
memory; nothing is written to disk, so disk speed does not enter the numbers.

Methods:
  pillow                  what typical Python services do: re-open the file for each
                          version, exif_transpose, thumbnail(LANCZOS), RGB, save.
  vips-best               libvips used well: one shrink-on-load decode straight to the
                          largest version, then each smaller version resized from the
                          previous one in memory (2500 -> 1920 -> 700 -> 150).
  vipsthumbnail-per-size  pyvips.Image.thumbnail(path) once per version, i.e. one
                          (shrink-on-load) decode per version, like the vipsthumbnail CLI.
"""
import argparse
import gc
import io
import math
import os
import statistics
import sys
import time
from pathlib import Path

# Must be in the environment before libvips starts; the wrapper sets it too, this
# only covers running the file directly.
os.environ.setdefault("VIPS_CONCURRENCY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import PIL.features  # noqa: E402
import pyvips  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

# name, (box width, box height); largest first, because vips-best cascades downwards.
SIZES = [
    ("d2500", (2500, 2500)),
    ("big_1920", (1920, 1080)),
    ("big_thumb", (700, 700)),
    ("thumb", (150, 120)),
]
QUALITY = 85
METHODS = ["pillow", "vips-best", "vipsthumbnail-per-size"]

# Repeated runs must redo the work rather than be served from libvips' operation
# cache, and the pool must really be one thread even if the env var was lost.
pyvips.cache_set_max(0)
pyvips.cache_set_max_mem(0)
pyvips.cache_set_max_files(0)
if hasattr(pyvips, "concurrency_set"):
    pyvips.concurrency_set(1)


def fit(w, h, box_w, box_h):
    """The project's fit rule: fit inside the box, never upscale, sides >= 1.

    Rounds half up (floor(x + 0.5)), which is what Rust's f64::round does for
    positive numbers; Python's round() would round half to even.
    """
    s = min(box_w / w, box_h / h, 1.0)
    return max(1, math.floor(w * s + 0.5)), max(1, math.floor(h * s + 0.5))


def oriented_size(path):
    """Display size after EXIF orientation, read from the header only."""
    with Image.open(path) as im:
        w, h = im.size
        # Orientations 5-8 rotate by 90 degrees, so width and height swap.
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            w, h = h, w
    return w, h


def targets_for(path):
    w, h = oriented_size(path)
    return (w, h), {name: fit(w, h, *box) for name, box in SIZES}


# libvips is handed the already-fitted size. With size="down" it re-derives the fit
# itself and rounds differently (6028x3391 into 2500x2500 gives 2499x1406, the rule
# says 2500x1406; the 2500 -> 150 step gives 149x84), so outputs would differ by a
# pixel from Pillow's and ours. "force" makes it produce exactly the fitted size;
# it can never upscale because fit() already capped the scale at 1, and the aspect
# change is below one pixel, the same as the rule's own rounding.
VIPS_SIZE = "force"


# --- the three methods; each returns [(version, (w, h), jpeg bytes)] -------------

def render_pillow(path, targets):
    out = []
    for name, box in SIZES:
        # Re-opened per version on purpose: that is how such services are written.
        # Note exif_transpose() loads the whole image, so thumbnail()'s JPEG draft
        # (DCT-domain downscale) no longer applies and every version is a full decode.
        with Image.open(path) as src:
            img = ImageOps.exif_transpose(src)
            img.thumbnail(box, Image.LANCZOS)
            img = img.convert("RGB")
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=QUALITY)
        out.append((name, img.size, buf.getvalue()))
    return out


def render_vips_best(path, targets):
    out = []
    first, *rest = [name for name, _ in SIZES]
    w, h = targets[first]
    # thumbnail() from the file can shrink on load (libjpeg DCT scaling) and
    # autorotates. copy_memory() is essential: vips images are lazy pipelines over a
    # sequential read, so without it every derived version would decode the file
    # again (or fail with "out of order read").
    img = pyvips.Image.thumbnail(path, w, height=h, size=VIPS_SIZE).copy_memory()
    out.append((first, (img.width, img.height), img.jpegsave_buffer(Q=QUALITY, strip=True)))
    for name in rest:
        w, h = targets[name]
        # Materialised too, so the next (smaller) version resizes these pixels
        # instead of recomputing this resize.
        img = img.thumbnail_image(w, height=h, size=VIPS_SIZE).copy_memory()
        out.append((name, (img.width, img.height), img.jpegsave_buffer(Q=QUALITY, strip=True)))
    return out


def render_vipsthumbnail_per_size(path, targets):
    out = []
    for name, _ in SIZES:
        w, h = targets[name]
        img = pyvips.Image.thumbnail(path, w, height=h, size=VIPS_SIZE)
        out.append((name, (img.width, img.height), img.jpegsave_buffer(Q=QUALITY, strip=True)))
    return out


RENDER = {
    "pillow": render_pillow,
    "vips-best": render_vips_best,
    "vipsthumbnail-per-size": render_vipsthumbnail_per_size,
}


def timed(fn, *args):
    """(wall ms, cpu ms, result). CPU time covers all threads of the process, so
    cpu/wall clearly above 1 would mean something used a second core."""
    gc.collect()  # don't bill one method for garbage another left behind
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn(*args)
    t1, c1 = time.perf_counter(), time.process_time()
    return (t1 - t0) * 1000.0, (c1 - c0) * 1000.0, result


# --- quality --------------------------------------------------------------------

def reference(path, size):
    """Full decode + orientation, Lanczos to the exact fitted size in 32-bit float
    per channel, never rounded to 8 bits nor JPEG-encoded."""
    with Image.open(path) as src:
        img = ImageOps.exif_transpose(src).convert("RGB")
    chans = [c.convert("F").resize(size, Image.LANCZOS) for c in img.split()]
    return np.stack([np.asarray(c, dtype=np.float64) for c in chans], axis=-1)


def psnr(ref, jpeg):
    """PSNR (dB, peak 255) of a JPEG against the float reference. A candidate of a
    different size is resized to the reference first and flagged, since its number
    then also measures that extra resize."""
    with Image.open(io.BytesIO(jpeg) if isinstance(jpeg, bytes) else jpeg) as im:
        im = im.convert("RGB")
    ref_size = (ref.shape[1], ref.shape[0])
    resized = im.size != ref_size
    if resized:
        im = im.resize(ref_size, Image.LANCZOS)
    mse = float(np.mean((np.asarray(im, dtype=np.float64) - ref) ** 2))
    value = float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)
    return value, resized


def _luma(rgb):
    """BT.601 luma of an RGB float array, the plane SSIM is usually computed on."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _gauss(plane, sigma=1.5, radius=5):
    """Separable Gaussian blur (11 taps), 'valid' region only, as in Wang et al. 2004."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    k /= k.sum()
    n = 2 * radius
    rows = sum(k[i] * plane[i:plane.shape[0] - n + i, :] for i in range(n + 1))
    return sum(k[i] * rows[:, i:rows.shape[1] - n + i] for i in range(n + 1))


def ssim(ref, jpeg):
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
    peak 255) of a JPEG's luma against the float reference's luma. 1.0 = identical."""
    with Image.open(io.BytesIO(jpeg) if isinstance(jpeg, bytes) else jpeg) as im:
        im = im.convert("RGB")
    ref_size = (ref.shape[1], ref.shape[0])
    if im.size != ref_size:
        im = im.resize(ref_size, Image.LANCZOS)
    a, b = _luma(ref), _luma(np.asarray(im, dtype=np.float64))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _gauss(a), _gauss(b)
    var_a = _gauss(a * a) - mu_a * mu_a
    var_b = _gauss(b * b) - mu_b * mu_b
    cov = _gauss(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


# --- main -----------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path, help="directory of JPEG photos")
    ap.add_argument("runs", type=int, nargs="?", default=3, help="timed runs per photo (default 3)")
    ap.add_argument("--quality", action="store_true", help="PSNR of big_1920 vs a float Lanczos reference")
    ap.add_argument("--ours", type=Path, help="directory with <stem>.big_1920.jpg to include as 'ours'")
    args = ap.parse_intermixed_args()
    if args.runs < 1:
        ap.error("RUNS must be >= 1")

    photos = sorted(p for p in args.dir.iterdir()
                    if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
    if not photos:
        sys.exit(f"no .jpg/.jpeg files in {args.dir}")

    print(f"# Pillow {PIL.__version__} (libjpeg-turbo {PIL.features.version('libjpeg_turbo')}), "
          f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} "
          f"(pyvips {pyvips.__version__}), VIPS_CONCURRENCY={os.environ.get('VIPS_CONCURRENCY')}, "
          f"vips cache off, runs={args.runs}, JPEG Q{QUALITY}")

    # One untimed pass of every method, so the first timed photo does not pay for
    # libvips' lazy start-up (operation lookup, libjpeg init) or a cold page cache.
    _, t = targets_for(photos[0])
    for m in METHODS:
        RENDER[m](str(photos[0]), t)

    per_photo = {m: [] for m in METHODS}   # median wall ms per photo
    cpu_ratio = {m: [] for m in METHODS}   # median cpu/wall per photo
    big = {}                               # photo -> {method: big_1920 jpeg bytes}
    for photo in photos:
        photo.read_bytes()  # page cache warm for everyone, not just the method that runs first
        src_size, targets = targets_for(photo)
        walls = {m: [] for m in METHODS}
        ratios = {m: [] for m in METHODS}
        results = {}
        # Methods interleaved within each run, so slow drift (thermal, the other
        # build on this machine) spreads over all methods instead of one.
        for _ in range(args.runs):
            for m in METHODS:
                wall, cpu, results[m] = timed(RENDER[m], str(photo), targets)
                walls[m].append(wall)
                ratios[m].append(cpu / wall if wall else 0.0)
        parts = []
        for m in METHODS:
            med = statistics.median(walls[m])
            per_photo[m].append(med)
            cpu_ratio[m].append(statistics.median(ratios[m]))
            parts.append(f"{m} {med:.1f} ms")
        print(f"{photo.name} {src_size[0]}x{src_size[1]}: " + ", ".join(parts))
        # A method that ignores the fit rule by a pixel is not doing the same work
        # and its PSNR is not comparable, so say so right under the photo.
        for m in METHODS:
            for name, size, _ in results[m]:
                if tuple(size) != targets[name]:
                    print(f"  note: {m} {name} is {size[0]}x{size[1]}, "
                          f"fit rule says {targets[name][0]}x{targets[name][1]}")
        big[photo] = {m: next(b for n, _, b in results[m] if n == "big_1920") for m in METHODS}

    n = len(photos)
    print("cpu/wall (about 1.00 = one thread): " + ", ".join(
        f"{m} {statistics.median(cpu_ratio[m]):.2f}" for m in METHODS))
    for m in METHODS:
        print(f"{m}: {n} photos, median {statistics.median(per_photo[m]):.1f} ms/photo")

    if args.quality:
        quality_report(photos, big, args.ours)


def quality_report(photos, big, ours_dir):
    cols = METHODS + (["ours"] if ours_dir else [])
    scores = {c: [] for c in cols}
    ssims = {c: [] for c in cols}
    sizes = {c: [] for c in cols}
    print()
    print("big_1920 vs a float Lanczos reference: PSNR dB / SSIM of luma "
          "(higher = closer; * = resized to compare):")
    print("photo\t" + "\t".join(cols))
    for photo in photos:
        _, targets = targets_for(photo)
        ref = reference(photo, targets["big_1920"])
        cands = dict(big[photo])
        if ours_dir:
            mine = ours_dir / f"{photo.stem}.big_1920.jpg"
            if mine.is_file():
                cands["ours"] = mine.read_bytes()
        cells = []
        for c in cols:
            if c not in cands:
                cells.append("-")
                continue
            value, resized = psnr(ref, cands[c])
            similarity = ssim(ref, cands[c])
            scores[c].append(value)
            ssims[c].append(similarity)
            sizes[c].append(len(cands[c]))
            cells.append(f"{value:.2f}/{similarity:.4f}{'*' if resized else ''}")
        print(photo.name + "\t" + "\t".join(cells))
    for c in cols:
        if scores[c]:
            # A photo every method reproduces exactly (an all-black frame) has an infinite
            # PSNR; the mean is over the others.
            finite = [v for v in scores[c] if math.isfinite(v)]
            print(f"{c}: mean PSNR {statistics.fmean(finite):.2f} dB over {len(finite)} photos "
                  f"({len(scores[c]) - len(finite)} exact), mean SSIM {statistics.fmean(ssims[c]):.4f}, "
                  f"big_1920 mean {statistics.fmean(sizes[c]) / 1024:.0f} KiB")
        else:
            print(f"{c}: no outputs found")


if __name__ == "__main__":
    main()
