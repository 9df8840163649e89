//! Prints what the renderer makes of each file given: `cargo run -p gallery-render --example probe -- FILES`.
fn main() {
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path).unwrap();
        match gallery_render::render(&bytes, Default::default()) {
            Ok(r) => println!("{path}: ok {}x{}", r.upright.width, r.upright.height),
            Err(e) => println!("{path}: {} {}", e.code, e.message),
        }
    }
}
