//! Times each step of the cascade on one photo (decode, every resize, every encode):
//! `cargo run --release -p gallery-render --example steps -- FILE`.
use std::time::Instant;

use fast_image_resize::{self as fr, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image};
use gallery_schema::{Size, VersionName, fit_inside};

fn main() {
    let path = std::env::args().nth(1).expect("a JPEG");
    let bytes = std::fs::read(&path).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let d = gallery_render::decode(&bytes, Default::default()).unwrap();
        let mut line = format!("decode {:.1}", t.elapsed().as_secs_f64() * 1e3);
        let upright = d.original;
        let (w, h) = (d.image.width(), d.image.height());
        let mut current =
            Image::from_vec_u8(w, h, d.image.into_rgb8().into_raw(), PixelType::U8x3).unwrap();
        let mut resizer = Resizer::new();
        let options =
            ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fr::FilterType::Lanczos3));
        for version in VersionName::CASCADE {
            let target = fit_inside(upright, version.bounds());
            let t = Instant::now();
            if target != Size::new(current.width(), current.height()) {
                let mut next = Image::new(target.width, target.height, PixelType::U8x3);
                resizer.resize(&current, &mut next, &options).unwrap();
                current = next;
            }
            let r = t.elapsed();
            let t = Instant::now();
            let data = gallery_render::turbo::encode_rgb(
                current.buffer(),
                current.width(),
                current.height(),
                85,
            )
            .unwrap();
            line += &format!(
                " | {version} resize {:.1} encode {:.1} ({} KiB)",
                r.as_secs_f64() * 1e3,
                t.elapsed().as_secs_f64() * 1e3,
                data.len() / 1024
            );
        }
        println!("{line}");
    }
}
