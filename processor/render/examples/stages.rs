//! Times the pipeline's stages on one photo: `cargo run --release -p gallery-render --example stages -- FILE`.
use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).expect("a JPEG");
    let bytes = std::fs::read(&path).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let d = gallery_render::decode(&bytes, Default::default()).unwrap();
        let decode = t.elapsed();
        let t = Instant::now();
        let r = gallery_render::render_decoded(d).unwrap();
        let rest = t.elapsed();
        let t = Instant::now();
        for v in &r.versions {
            let img = image::load_from_memory(&v.data).unwrap().into_rgb8();
            let _ = gallery_render::turbo::encode_rgb(img.as_raw(), img.width(), img.height(), 85)
                .unwrap();
        }
        let enc = t.elapsed();
        println!(
            "decode {decode:?}  resize+colour+encode {rest:?}  (re-encode of the outputs alone {enc:?})"
        );
    }
}
