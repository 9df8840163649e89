//! Which DCT scale to decode a JPEG at: times libjpeg-turbo's M/8 decode plus the resize to the
//! largest version for every M that still covers it, best of 5, interleaved:
//! `cargo run --release -p gallery-render --example scales -- FILE...`. The rule in
//! `turbo::dct_scale` comes from these figures.
use std::time::Instant;

use fast_image_resize::{self as fr, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image};
use gallery_schema::{Size, VersionName, fit_inside};

fn main() {
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path).unwrap();
        let (w, h, _) = gallery_render::turbo::decode_rgb(&bytes, 8).unwrap();
        let progressive = turbojpeg::read_header(&bytes).unwrap().is_progressive;
        let target = fit_inside(Size::new(w, h), VersionName::CASCADE[0].bounds());
        let scales: Vec<usize> = (1..=8)
            .filter(|&m| {
                (w as usize * m).div_ceil(8) >= target.width as usize
                    && (h as usize * m).div_ceil(8) >= target.height as usize
            })
            .collect();
        let mut best = vec![(f64::MAX, f64::MAX); scales.len()];
        let options =
            ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fr::FilterType::Lanczos3));
        for _ in 0..5 {
            for (i, &m) in scales.iter().enumerate() {
                let t = Instant::now();
                let (dw, dh, px) = gallery_render::turbo::decode_rgb(&bytes, m).unwrap();
                let decoded = t.elapsed().as_secs_f64() * 1e3;
                let src = Image::from_vec_u8(dw, dh, px, PixelType::U8x3).unwrap();
                let mut dst = Image::new(target.width, target.height, PixelType::U8x3);
                Resizer::new().resize(&src, &mut dst, &options).unwrap();
                let total = t.elapsed().as_secs_f64() * 1e3;
                best[i] = (best[i].0.min(decoded), best[i].1.min(total));
            }
        }
        let mut line = String::new();
        for (&m, (decoded, total)) in scales.iter().zip(&best) {
            line += &format!(" | {m}/8 decode {decoded:.1} +resize {total:.1}");
        }
        let kind = if progressive {
            "progressive"
        } else {
            "baseline"
        };
        println!("{} {w}x{h} {kind}{line}", path.rsplit('/').next().unwrap());
    }
}
