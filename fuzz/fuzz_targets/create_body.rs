#![no_main]
//! `POST /images/` and `POST /tokens` bodies: a request or a 4xx, never a panic or a 5xx.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = gallery_api::routes::create_image::parse_create(data, 50_000_000) {
        assert!(e.status.is_client_error());
    }
    if let Err(e) = gallery_api::routes::tokens::parse_mint(data) {
        assert!(e.status.is_client_error());
    }
});
