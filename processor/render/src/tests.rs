//! Rendering generated images: exact fitted sizes, orientation, alpha, limits and refusals.

use std::io::Cursor;

use image::{ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

use super::*;

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    // A gradient with a bright top-left quadrant, so orientation is visible in the pixels.
    let img = RgbImage::from_fn(w, h, |x, y| {
        if x < w / 2 && y < h / 2 {
            Rgb([250, 250, 250])
        } else {
            Rgb([(x % 256) as u8, (y % 256) as u8, 40])
        }
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn png_rgba(w: u32, h: u32, alpha: u8) -> Vec<u8> {
    let img = RgbaImage::from_pixel(w, h, Rgba([10, 200, 30, alpha]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Inserts an APP1 Exif segment with only an Orientation tag after the JPEG's SOI.
pub(crate) fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&[0, 1]); // one IFD entry
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]); // Orientation, SHORT, count 1
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding, next IFD = none
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let len = (payload.len() + 2) as u16;
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn sizes(r: &Rendered) -> Vec<(VersionName, u32, u32)> {
    r.versions
        .iter()
        .map(|v| (v.version, v.size.width, v.size.height))
        .collect()
}

#[test]
fn a_photo_gets_four_fitted_jpeg_versions() {
    let r = render(&jpeg(4000, 3000), Limits::default()).unwrap();
    assert_eq!(r.upright, Size::new(4000, 3000));
    assert_eq!(
        sizes(&r),
        vec![
            (VersionName::D2500, 2500, 1875),
            (VersionName::Big1920, 1440, 1080),
            (VersionName::BigThumb, 700, 525),
            (VersionName::Thumb, 150, 113),
        ]
    );
    for v in &r.versions {
        assert_eq!(v.content_type, "image/jpeg");
        let decoded = image::load_from_memory_with_format(&v.data, ImageFormat::Jpeg).unwrap();
        assert_eq!(
            (decoded.width(), decoded.height()),
            (v.size.width, v.size.height)
        );
    }
}

#[test]
fn exif_orientation_is_applied_before_fitting() {
    // Stored 400x200 landscape, tagged "rotate 90° CW to display": upright it is 200x400.
    let r = render(&with_orientation(&jpeg(400, 200), 6), Limits::default()).unwrap();
    assert_eq!(r.upright, Size::new(200, 400));
    let thumb = r.versions.last().unwrap();
    assert_eq!((thumb.size.width, thumb.size.height), (60, 120));
    // The bright quadrant was top-left when stored; after a 90° clockwise turn it is top-right.
    let img = image::load_from_memory(&r.versions[0].data)
        .unwrap()
        .into_rgb8();
    let (w, h) = img.dimensions();
    assert!(
        img.get_pixel(w * 3 / 4, h / 4).0[0] > 200,
        "top-right should be bright"
    );
    assert!(
        img.get_pixel(w / 4, h / 4).0[2] < 100,
        "top-left should be the gradient"
    );
}

/// libtiff's old-style JPEG test file: the pure-Rust decoders refuse it, libtiff reads it.
const OJPEG_TIFF: &[u8] =
    include_bytes!("../../../testdata/tiff/ojpeg_chewey_subsamp21_multi_strip.tiff");

/// Grey with alpha, which the `tiff` crate's encoder has no colour type for.
struct GreyAlpha8;
impl tiff::encoder::colortype::ColorType for GreyAlpha8 {
    type Inner = u8;
    const TIFF_VALUE: tiff::tags::PhotometricInterpretation =
        tiff::tags::PhotometricInterpretation::BlackIsZero;
    const BITS_PER_SAMPLE: &'static [u16] = &[8, 8];
    const SAMPLE_FORMAT: &'static [tiff::tags::SampleFormat] = &[
        tiff::tags::SampleFormat::Uint,
        tiff::tags::SampleFormat::Uint,
    ];

    fn horizontal_predict(row: &[u8], result: &mut Vec<u8>) {
        result.extend_from_slice(row); // never asked for: no predictor is set
    }
}

#[test]
fn tiffs_only_libtiff_reads_render_upright() {
    let r = render(OJPEG_TIFF, Limits::default()).unwrap();
    assert_eq!(r.upright, Size::new(392, 575));
    // Grey with alpha (two samples, which the `image` crate refuses), stored 4x2 with the left
    // half black and the right half white, tagged "rotate 90° CW to display": upright it is
    // 2x4 with the stored left half on top.
    let mut out = std::io::Cursor::new(Vec::new());
    let mut encoder = tiff::encoder::TiffEncoder::new(&mut out).unwrap();
    let mut image = encoder.new_image::<GreyAlpha8>(4, 2).unwrap();
    let enc = image.encoder();
    enc.write_tag(tiff::tags::Tag::Orientation, 6u16).unwrap();
    enc.write_tag(tiff::tags::Tag::ExtraSamples, 2u16).unwrap();
    #[rustfmt::skip]
    image.write_data(&[
        0, 255, 0, 255, 255, 255, 255, 255,
        0, 255, 0, 255, 255, 255, 255, 255,
    ]).unwrap();
    let r = render(&out.into_inner(), Limits::default()).unwrap();
    assert_eq!(r.upright, Size::new(2, 4));
    let img = image::load_from_memory(&r.versions[0].data)
        .unwrap()
        .into_luma8();
    assert_eq!(img.dimensions(), (2, 4));
    assert!(img.get_pixel(0, 0).0[0] < 40, "top is the stored left half");
    assert!(
        img.get_pixel(1, 3).0[0] > 215,
        "bottom is the stored right half"
    );
}

#[test]
fn versions_carry_no_metadata() {
    let r = render(&with_orientation(&jpeg(800, 600), 1), Limits::default()).unwrap();
    for v in &r.versions {
        assert!(
            !v.data.windows(4).any(|w| w == b"Exif"),
            "{} has EXIF",
            v.version
        );
    }
}

#[test]
fn tiny_images_are_never_upscaled() {
    let r = render(&jpeg(1, 1), Limits::default()).unwrap();
    assert!(r.versions.iter().all(|v| v.size == Size::new(1, 1)));
}

/// An animated PNG of two 40x30 RGB frames: red, then blue.
fn apng() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 40, 30);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_animated(2, 0).unwrap();
        let mut writer = encoder.write_header().unwrap();
        for rgb in [[220u8, 20, 20], [20, 20, 220]] {
            let frame: Vec<u8> = std::iter::repeat_n(rgb, 40 * 30).flatten().collect();
            writer.write_image_data(&frame).unwrap();
        }
        writer.finish().unwrap();
    }
    out
}

#[test]
fn an_animated_png_renders_its_first_frame() {
    let bytes = apng();
    assert!(bytes.windows(4).any(|w| w == b"acTL"), "really animated");
    let r = render(&bytes, Limits::default()).unwrap();
    assert_eq!(r.upright, Size::new(40, 30));
    let thumb = image::load_from_memory(&r.versions[3].data)
        .unwrap()
        .to_rgb8();
    let p = thumb.get_pixel(20, 15);
    assert!(p[0] > 180 && p[2] < 60, "the first (red) frame: {p:?}");
}

/// Mean R, G, B of RGBA pixels.
fn mean_rgb(rgba: &[u8]) -> [f64; 3] {
    let n = (rgba.len() / 4) as f64;
    let mut sum = [0.0; 3];
    for p in rgba.chunks_exact(4) {
        for c in 0..3 {
            sum[c] += f64::from(p[c]);
        }
    }
    sum.map(|s| s / n)
}

#[test]
fn the_thumbhash_decodes_to_the_thumbs_colours_and_shape() {
    // Two colour fields side by side, landscape: the placeholder must keep both the mean colour
    // and the orientation.
    let img = RgbImage::from_fn(1200, 600, |x, _| {
        if x < 600 {
            Rgb([200, 40, 30])
        } else {
            Rgb([30, 60, 190])
        }
    });
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png).unwrap();
    let r = render(&bytes.into_inner(), Limits::default()).unwrap();
    assert!(
        (5..=40).contains(&r.thumbhash.len()),
        "{} bytes",
        r.thumbhash.len()
    );
    let thumb = image::load_from_memory(&r.versions[3].data)
        .unwrap()
        .to_rgba8();
    let (w, h, rgba) = thumbhash::thumb_hash_to_rgba(&r.thumbhash).unwrap();
    assert!(w > h, "a landscape placeholder, got {w}x{h}");
    let (want, got) = (mean_rgb(thumb.as_raw()), mean_rgb(&rgba));
    for c in 0..3 {
        assert!(
            (want[c] - got[c]).abs() < 12.0,
            "channel {c}: thumb {want:?}, placeholder {got:?}"
        );
    }
    // Left half red, right half blue in the placeholder too.
    let left = &rgba[(h / 2 * w + w / 8) * 4..][..4];
    let right = &rgba[(h / 2 * w + w * 7 / 8) * 4..][..4];
    assert!(
        left[0] > left[2] && right[2] > right[0],
        "{left:?} {right:?}"
    );

    // Transparent images get one too (with alpha).
    let clear = render(&png_rgba(300, 200, 128), Limits::default()).unwrap();
    let (_, _, rgba) = thumbhash::thumb_hash_to_rgba(&clear.thumbhash).unwrap();
    assert!(rgba.chunks_exact(4).all(|p| p[3] < 200), "alpha kept");
}

#[test]
fn transparency_is_kept_as_png_and_opaque_alpha_becomes_jpeg() {
    let r = render(&png_rgba(300, 200, 128), Limits::default()).unwrap();
    assert!(
        r.versions
            .iter()
            .all(|v| v.content_type == "image/png" && v.extension == "png")
    );
    let thumb = image::load_from_memory(&r.versions[3].data).unwrap();
    assert!(thumb.color().has_alpha());
    assert_eq!((thumb.width(), thumb.height()), (150, 100));

    let opaque = render(&png_rgba(300, 200, 255), Limits::default()).unwrap();
    assert!(
        opaque
            .versions
            .iter()
            .all(|v| v.content_type == "image/jpeg")
    );
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A real 128x128 PNG whose IHDR was edited to claim `w`x`h` (as in the shared bomb set).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = png_rgba(128, 128, 255);
    // Signature (8) + length (4), then "IHDR" and its 13 data bytes, then the CRC.
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[test]
fn refusals_have_stable_codes() {
    let code = |bytes: &[u8]| render(bytes, Limits::default()).unwrap_err().code;
    assert_eq!(code(b""), ErrorCode::CorruptImage);
    assert_eq!(
        code(b"hello, I am a text file"),
        ErrorCode::UnsupportedFormat
    );
    assert_eq!(
        code(b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        ErrorCode::UnsupportedFormat
    );
    let photo = jpeg(640, 480);
    assert_eq!(code(&photo[..200]), ErrorCode::CorruptImage);
    // A decompression bomb is refused from its header, without allocating.
    let started = std::time::Instant::now();
    assert_eq!(
        code(&png_claiming(100_000, 100_000)),
        ErrorCode::ImageTooLarge
    );
    assert_eq!(
        code(&png_claiming(20_000, 20_000)),
        ErrorCode::ImageTooLarge
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(50));
    let small = Limits {
        max_pixels: 1000,
        max_side: 30_000,
    };
    assert_eq!(
        render(&photo, small).unwrap_err().code,
        ErrorCode::ImageTooLarge
    );
}

/// A HEIF from the committed test set (Pillow's `hopper.heif`, 128x128).
const HOPPER_HEIF: &[u8] = include_bytes!("../../../testdata/heic_avif/hopper.heif");

#[test]
fn heif_decodes_and_hostile_heif_is_refused_with_a_code() {
    let r = render(HOPPER_HEIF, Limits::default()).unwrap();
    assert_eq!(r.upright, Size::new(128, 128));
    // Cut anywhere: a code, never a panic or a hang.
    for cut in [
        16,
        40,
        200,
        400,
        HOPPER_HEIF.len() / 2,
        HOPPER_HEIF.len() - 10,
    ] {
        let e = render(&HOPPER_HEIF[..cut], Limits::default()).unwrap_err();
        assert!(
            matches!(
                e.code,
                ErrorCode::CorruptImage | ErrorCode::UnsupportedFormat
            ),
            "cut at {cut}: {e}"
        );
    }
    // The `ispe` box claims a side over the limit, or more pixels than the limit: refused from
    // the container, before any decoding.
    let at = HOPPER_HEIF.windows(4).position(|w| w == b"ispe").unwrap();
    for (w, h) in [(60_000u32, 60_000u32), (12_000, 9_000)] {
        let mut bomb = HOPPER_HEIF.to_vec();
        bomb[at + 8..at + 12].copy_from_slice(&w.to_be_bytes());
        bomb[at + 12..at + 16].copy_from_slice(&h.to_be_bytes());
        let started = std::time::Instant::now();
        let e = render(&bomb, Limits::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ImageTooLarge, "{w}x{h}: {e}");
        assert!(
            started.elapsed().as_millis() < 50,
            "{:?}",
            started.elapsed()
        );
    }
}

/// Bounded, reproducible fuzzing of the decode entry on every CI run (a fixed seed, so a
/// failure is the same failure on the next run); `fuzz/` has the open-ended `cargo fuzz`
/// targets for longer runs. Inputs: random bytes, and real JPEG, PNG and HEIF files with a few
/// bytes changed and a random cut. Every outcome must be a render or a coded refusal.
mod fuzz {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    use super::*;

    fn config(cases: u32) -> Config {
        Config {
            cases,
            rng_seed: RngSeed::Fixed(0x6a11_e7a5),
            failure_persistence: None,
            ..Config::default()
        }
    }

    fn seeds() -> Vec<Vec<u8>> {
        vec![
            jpeg(64, 48),
            png_rgba(40, 30, 128),
            HOPPER_HEIF.to_vec(),
            OJPEG_TIFF.to_vec(),
        ]
    }

    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        (
            0..4usize,
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(which, edits, cut)| {
                let mut bytes = seeds().swap_remove(which);
                for (at, value) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
                let keep = bytes.len() / 2 + cut.index(bytes.len() / 2 + 1);
                bytes.truncate(keep);
                bytes
            })
    }

    fn coded(result: Result<Rendered, RenderError>) -> Result<(), TestCaseError> {
        if let Err(e) = result {
            prop_assert!(!e.message.is_empty());
            prop_assert!(e.code != ErrorCode::Internal, "{e}");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config(96))]

        #[test]
        fn damaged_real_files_render_or_get_a_code(bytes in mutated()) {
            coded(render(&bytes, Limits::default()))?;
        }

        #[test]
        fn random_bytes_get_a_code(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            coded(render(&bytes, Limits::default()))?;
            let _ = crate::jpeg::check(&bytes);
            let _ = gallery_schema::sniff::sniff_image(&bytes);
        }

        #[test]
        fn the_jpeg_walk_takes_any_damage(bytes in mutated()) {
            let _ = crate::jpeg::check(&bytes);
            let _ = crate::budget::probe(&bytes);
        }
    }
}
