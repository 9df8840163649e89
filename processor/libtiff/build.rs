//! Links the system libtiff (Debian's libtiff-dev; `scripts/ensure-build-deps.sh` installs it)
//! and compiles the C shim against the same header.
fn main() {
    let tiff = pkg_config::Config::new()
        .atleast_version("4.5")
        .probe("libtiff-4")
        .expect("libtiff 4.5 or newer with its pkg-config file (Debian: libtiff-dev)");
    let mut build = cc::Build::new();
    build.file("src/shim.c").warnings(true).extra_warnings(true);
    for dir in &tiff.include_paths {
        build.include(dir);
    }
    build.compile("gallery_tiff_shim");
    println!("cargo:rerun-if-changed=src/shim.c");
}
