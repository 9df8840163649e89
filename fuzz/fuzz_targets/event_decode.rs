#![no_main]
//! The one decode step every reader of the log uses: the first line is the subject.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (subject, payload) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&data[..0], data),
    };
    let subject = String::from_utf8_lossy(subject);
    if let Ok(event) = gallery_schema::Event::decode_checked(&subject, payload) {
        // What passes names only its own image's objects.
        if let gallery_schema::EventBody::VersionRendered(v) = &event.body {
            assert!(v.key.starts_with(&format!(
                "versions/{}/{}/",
                event.project_id, event.image_id
            )));
        }
    }
});
