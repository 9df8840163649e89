//! "To fit" (docs/ARCHITECTURE.md §7): scale into the box keeping the aspect ratio, never upscale.
//!
//! Factor `s = min(W/w, H/h, 1)` on the upright image; each side is `max(1, round(side * s))`.
//! The side that reaches its limit first is set to the limit exactly and the other is rounded
//! with integer arithmetic, so no float error can push a side past the box.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub const fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }

    pub fn pixels(self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// The size of `src` fitted inside `bounds`. Zero-sized inputs stay zero (the decoder refuses
/// them before this is ever asked).
pub fn fit_inside(src: Size, bounds: Size) -> Size {
    let (w, h) = (u64::from(src.width), u64::from(src.height));
    let (bw, bh) = (u64::from(bounds.width), u64::from(bounds.height));
    if w == 0 || h == 0 || (w <= bw && h <= bh) {
        return src;
    }
    // Width limits first when w/bw >= h/bh, i.e. w*bh >= h*bw (exact in u64: < 2^64).
    let (nw, nh) = if w * bh >= h * bw {
        (bw, round_div(h * bw, w))
    } else {
        (round_div(w * bh, h), bh)
    };
    Size::new(nw.max(1) as u32, nh.max(1) as u32)
}

/// `round(n / d)` with halves rounded up, in integers.
fn round_div(n: u64, d: u64) -> u64 {
    (2 * n + d) / (2 * d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fit(w: u32, h: u32, bw: u32, bh: u32) -> (u32, u32) {
        let s = fit_inside(Size::new(w, h), Size::new(bw, bh));
        (s.width, s.height)
    }

    #[test]
    fn table() {
        let cases = [
            // (source, box, expected)
            ((1000, 900), (150, 120), (133, 120)), // the design's example: height decides
            ((4000, 3000), (150, 120), (150, 113)),
            ((4000, 3000), (700, 700), (700, 525)),
            ((4000, 3000), (1920, 1080), (1440, 1080)),
            ((4000, 3000), (2500, 2500), (2500, 1875)),
            ((3000, 4000), (1920, 1080), (810, 1080)), // portrait
            ((3000, 4000), (150, 120), (90, 120)),
            ((12000, 1000), (1920, 1080), (1920, 160)), // panorama
            ((12000, 1000), (150, 120), (150, 13)),
            ((10000, 10), (150, 120), (150, 1)), // would round to 0: clamped to 1
            ((10, 10000), (150, 120), (1, 120)),
            ((1, 1), (150, 120), (1, 1)),         // tiny: never upscaled
            ((59, 100), (150, 120), (59, 100)),   // fits already
            ((150, 120), (150, 120), (150, 120)), // exactly the box
            ((700, 700), (700, 700), (700, 700)),
            ((1920, 1080), (1920, 1080), (1920, 1080)),
            ((3840, 2160), (1920, 1080), (1920, 1080)), // same aspect, exact halving
            ((151, 120), (150, 120), (150, 119)),
            ((2501, 2500), (2500, 2500), (2500, 2499)),
        ];
        for ((w, h), (bw, bh), want) in cases {
            assert_eq!(fit(w, h, bw, bh), want, "{w}x{h} into {bw}x{bh}");
        }
    }

    proptest! {
        #[test]
        fn never_exceeds_never_upscales_keeps_aspect(
            w in 1u32..60_000, h in 1u32..60_000, bw in 1u32..4000, bh in 1u32..4000,
        ) {
            let out = fit_inside(Size::new(w, h), Size::new(bw, bh));
            prop_assert!(out.width >= 1 && out.height >= 1);
            // Never larger than the box, unless the source already fitted.
            prop_assert!(out.width <= bw.max(1) && out.height <= bh.max(1));
            // Never upscaled.
            prop_assert!(out.width <= w && out.height <= h);
            // One side touches the box, or the image was left alone.
            let untouched = out == Size::new(w, h);
            prop_assert!(untouched || out.width == bw || out.height == bh);
            // Aspect kept within a pixel: the rounded side is within 1 px of the exact value
            // (or clamped up to 1).
            if !untouched {
                let exact_h = f64::from(out.width) * f64::from(h) / f64::from(w);
                let exact_w = f64::from(out.height) * f64::from(w) / f64::from(h);
                let ok = (f64::from(out.height) - exact_h).abs() <= 1.0
                    || (f64::from(out.width) - exact_w).abs() <= 1.0;
                prop_assert!(ok, "{}x{} -> {}x{}", w, h, out.width, out.height);
            }
        }
    }
}
