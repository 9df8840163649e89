//! Writes the versions of one image to a directory: `cargo run -p gallery-render --example dump -- IN OUTDIR`.
fn main() {
    let mut args = std::env::args().skip(1);
    let (input, out) = (
        args.next().expect("input"),
        args.next().expect("output dir"),
    );
    let bytes = std::fs::read(&input).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    match gallery_render::render(&bytes, Default::default()) {
        Ok(r) => {
            for v in r.versions {
                let path = format!("{out}/{}.{}", v.version, v.extension);
                std::fs::write(&path, &v.data).unwrap();
                println!("{path} {}x{}", v.size.width, v.size.height);
            }
        }
        Err(e) => println!("{input}: {} {}", e.code, e.message),
    }
}
