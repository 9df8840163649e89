#![no_main]
//! The render's entry: any bytes end in versions or a coded refusal, never a crash (in
//! production a crash costs only a worker process; here it is a finding).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = gallery_render::Limits {
        max_pixels: 4_000_000,
        max_side: 8_000,
    };
    let _ = gallery_render::jpeg::check(data);
    let _ = gallery_render::budget::probe(data);
    let _ = gallery_render::render(data, limits);
});
