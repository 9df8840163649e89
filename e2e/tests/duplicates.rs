//! Placeholders and duplicates through the whole stack: a processed image carries a ThumbHash
//! (record and WebSocket) that decodes to its thumb's colours, and the SHA-256 of its original;
//! `POST /images/` with a hash the project holds answers `duplicate_of` without a link; an
//! upload of the same bytes under another name is processed into its own versions and recorded
//! as a duplicate; other projects and deleted holders don't count.

use base64::Engine;
use gallery_e2e::sample_flow::RENDERED_VERSIONS;
use gallery_e2e::{TestStack, jpeg_photo, metric};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn mean_rgb(rgba: &[u8]) -> [f64; 3] {
    let n = (rgba.len() / 4) as f64;
    let mut sum = [0.0; 3];
    for p in rgba.chunks_exact(4) {
        for (c, s) in sum.iter_mut().enumerate() {
            *s += f64::from(p[c]);
        }
    }
    sum.map(|s| s / n)
}

async fn link_with_hash(stack: &TestStack, project: &str, name: &str, hash: &str) -> (u16, Value) {
    stack
        .post_json(
            "/images/",
            &json!({ "filename": name, "project_id": project, "sha256": hash }),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn placeholders_hashes_and_duplicates_per_project() {
    let stack = TestStack::start().await.unwrap();
    let mut ws = stack.ws("dup", None).await.unwrap();
    let photo = jpeg_photo(800, 500);
    let hash = hex::encode(Sha256::digest(&photo));

    let first = stack
        .sample_flow("dup", "first.jpg", photo.clone())
        .await
        .unwrap()
        .record;
    let first_id = first["image_id"].as_str().unwrap().to_owned();
    assert_eq!(first["meta"]["sha256"], hash.as_str(), "{first}");
    assert!(first.get("duplicate_of").is_none(), "{first}");

    // The placeholder: in the record and the `processed` message, decoding to the thumb's
    // colours in a landscape shape.
    let b64 = first["thumbhash"].as_str().expect("a thumbhash").to_owned();
    let done = ws.collect_until(&first_id, "processed").await.unwrap();
    let msg = done.last().unwrap();
    assert_eq!(msg["thumbhash"], b64.as_str(), "{msg}");
    assert_eq!(msg["sha256"], hash.as_str(), "{msg}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    let (w, h, rgba) = thumbhash::thumb_hash_to_rgba(&bytes).unwrap();
    assert!(w > h, "{w}x{h}");
    let thumb_url = first["versions"]["thumb"].as_str().unwrap();
    let thumb = stack.bytes_at(thumb_url).await.unwrap();
    let thumb = image::load_from_memory(&thumb).unwrap().to_rgba8();
    let (want, got) = (mean_rgb(thumb.as_raw()), mean_rgb(&rgba));
    for c in 0..3 {
        assert!(
            (want[c] - got[c]).abs() < 16.0,
            "channel {c}: thumb {want:?}, placeholder {got:?}"
        );
    }

    // Asking with the hash: the image that has those bytes, no link, nothing recorded.
    let (status, body) = link_with_hash(&stack, "dup", "again.jpg", &hash).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "duplicate_of": first_id }));
    // The hash is checked per project: another project gets a link.
    let (status, body) = link_with_hash(&stack, "elsewhere", "first.jpg", &hash).await;
    assert_eq!(status, 201, "{body}");
    // Upper-case hex is the same hash; other bytes' hash gets a link.
    let (status, _) = link_with_hash(&stack, "dup", "x.jpg", &hash.to_uppercase()).await;
    assert_eq!(status, 200);
    let other = hex::encode(Sha256::digest(b"other bytes"));
    let (status, body) = link_with_hash(&stack, "dup", "x.jpg", &other).await;
    assert_eq!(status, 201, "{body}");

    // The same bytes under another name, without a hash: processed into its own versions and
    // recorded as a duplicate of the first.
    let second = stack
        .sample_flow("dup", "second name.jpg", photo.clone())
        .await
        .unwrap()
        .record;
    let second_id = second["image_id"].as_str().unwrap().to_owned();
    assert_eq!(second["duplicate_of"], first_id.as_str(), "{second}");
    assert_eq!(second["meta"]["sha256"], hash.as_str());
    assert_eq!(
        second["thumbhash"],
        b64.as_str(),
        "same pixels, same placeholder"
    );
    for v in RENDERED_VERSIONS {
        assert_ne!(
            second["versions"][v], first["versions"][v],
            "{v}: own objects"
        );
    }
    let metrics = stack.metrics().await.unwrap();
    assert_eq!(
        metric(&metrics, "gallery_duplicates_total{at=\"link\"}"),
        Some(2.0)
    );

    // Once the holder is deleted, the bytes are free again until the next image processed
    // with them holds them.
    let (status, body) = stack.delete(&format!("/images/{first_id}")).await.unwrap();
    assert_eq!(status, 202, "{body}");
    ws.collect_until(&first_id, "deleted").await.unwrap();
    let (status, body) = link_with_hash(&stack, "dup", "third.jpg", &hash).await;
    assert_eq!(status, 201, "{body}");
    let third_id = body["image_id"].as_str().unwrap().to_owned();
    let (status, body) = stack.upload(&body, photo).await.unwrap();
    assert!((200..300).contains(&status), "{status} {body}");
    let third = stack.wait_state(&third_id, "done").await.unwrap();
    assert!(third.get("duplicate_of").is_none(), "{third}");
    let (status, body) = link_with_hash(&stack, "dup", "fourth.jpg", &hash).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate_of"], third_id.as_str());
    // The second image still names the first: what held the bytes when it was processed.
    let second = stack.image(&second_id).await.unwrap();
    assert_eq!(second["duplicate_of"], first_id.as_str());
}
