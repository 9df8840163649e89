//! The pixel pipeline checked by pixels on the test image set: EXIF orientation against the
//! untagged reference, embedded profiles against LittleCMS, 16-bit inputs against their rounded
//! samples, HEIC/AVIF against another libheif-based decoder. The set is the shared developer
//! set when `GALLERY_TESTDATA` names it, else the committed `testdata/` subset; the checks that
//! need the larger photos (orientation, some profiles) run with the whole set only.

// Each test binary uses part of the shared module.
#[allow(dead_code)]
#[path = "../../../testdata/testset.rs"]
mod testset;

use gallery_render::{Limits, render};
use gallery_schema::{Size, VersionName};
use testset::{full_testdata, testdata_or_subset as testdata};

fn decode_rgb(data: &[u8]) -> image::RgbImage {
    image::load_from_memory(data).unwrap().into_rgb8()
}

fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn every_exif_orientation_comes_out_upright_by_pixels() {
    let Some(dir) = full_testdata() else { return };
    for set in ["Landscape", "Portrait"] {
        let reference = render(
            &std::fs::read(dir.join(format!("orientation/{set}_0.jpg"))).unwrap(),
            Limits::default(),
        )
        .unwrap();
        let ref_big = decode_rgb(&reference.versions[2].data); // big_thumb
        for n in 1..=8 {
            let r = render(
                &std::fs::read(dir.join(format!("orientation/{set}_{n}.jpg"))).unwrap(),
                Limits::default(),
            )
            .unwrap();
            assert_eq!(r.versions[2].version, VersionName::BigThumb);
            let big = decode_rgb(&r.versions[2].data);
            let diff = mean_abs_diff(&big, &ref_big);
            // JPEG noise between two encodings of the same picture is a few levels; a wrong
            // rotation or flip gives tens.
            assert!(
                diff < 4.0,
                "{set}_{n}: mean difference {diff:.2} from the upright reference"
            );
        }
    }
}

/// Mean sRGB colour of each file converted with LittleCMS (Pillow 13.0.0 ImageCms, from the
/// embedded profile to sRGB), and of its unconverted pixels.
const LCMS_MEANS: [(&str, [f64; 3], [f64; 3]); 7] = [
    (
        "heic_avif/iphone11_gps_p3.heic",
        [124.2, 119.8, 117.5],
        [124.1, 120.1, 118.7],
    ),
    (
        "icc/canon_t6_adobe_rgb.jpg",
        [131.1, 128.3, 126.4],
        [129.7, 127.7, 125.9],
    ),
    (
        "icc/fujifilm_xt2_adobe_rgb.tiff",
        [42.5, 43.7, 9.3],
        [49.2, 48.6, 17.8],
    ),
    (
        "icc/display_p3_8x8.png",
        [255.0, 0.0, 0.0],
        [248.0, 0.0, 0.0],
    ),
    (
        "icc/prophoto_1x1.png",
        [117.0, 160.0, 210.0],
        [131.0, 141.0, 192.0],
    ),
    (
        "icc/large_icc_multisegment.jpg",
        [59.5, 121.6, 176.5],
        [57.4, 106.9, 168.5],
    ),
    (
        "cmyk/cmyk_swop_profile.jpg",
        [120.9, 126.4, 115.2],
        [109.0, 132.1, 109.6],
    ),
];

#[test]
fn embedded_profiles_are_converted_to_srgb() {
    let dir = testdata();
    let mut checked = 0;
    for (file, converted, unconverted) in LCMS_MEANS {
        // The subset holds the two PNGs; the whole set all six.
        if !dir.join(file).is_file() {
            continue;
        }
        checked += 1;
        let r = render(&std::fs::read(dir.join(file)).unwrap(), Limits::default()).unwrap();
        let img = decode_rgb(&r.versions[0].data);
        let n = f64::from(img.width() * img.height());
        let mean: Vec<f64> = (0..3)
            .map(|c| img.pixels().map(|p| f64::from(p.0[c])).sum::<f64>() / n)
            .collect();
        let dist = |a: &[f64]| (0..3).map(|c| (mean[c] - a[c]).abs()).fold(0.0, f64::max);
        assert!(
            dist(&converted) < dist(&unconverted) && dist(&converted) < 2.5,
            "{file}: mean {mean:.1?}, LittleCMS {converted:?}, unconverted {unconverted:?}"
        );
    }
    assert!(
        checked >= 2,
        "only {checked} profile samples in {}",
        dir.display()
    );
}

/// Orientation in the other containers: PNG (EXIF in an ImageMagick raw-profile text chunk),
/// WebP, and a real camera JPEG. Reference: the raw pixels turned by the tag the MANIFEST
/// documents, resized independently.
#[test]
fn orientation_in_png_webp_and_camera_files_is_applied_by_pixels() {
    let Some(dir) = full_testdata() else { return };
    for (file, tag) in [
        ("orientation/png_exif_orientation3.png", 3),
        ("orientation/Landscape_orientation6.webp", 6),
        ("orientation/canon_sx60_orientation6.jpg", 6),
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let r = render(&bytes, Limits::default()).unwrap();
        let ours = decode_rgb(&r.versions[2].data);
        let mut raw = image::load_from_memory(&bytes).unwrap();
        raw.apply_orientation(image::metadata::Orientation::from_exif(tag).unwrap());
        let reference = raw
            .resize_exact(
                ours.width(),
                ours.height(),
                image::imageops::FilterType::Lanczos3,
            )
            .into_rgb8();
        let diff = mean_abs_diff(&ours, &reference);
        assert!(
            diff < 4.0,
            "{file}: mean difference {diff:.2} from the raw pixels turned by tag {tag}"
        );
    }
}

/// Reference pixels of a PNG, read with the `png` crate itself (tRNS expanded to alpha, samples
/// kept at 16 bits) and brought to 8 bits by rounding v * 255 / 65535: independent of the
/// conversions the pipeline uses. As RGBA. gAMA is ignored here as by the pipeline, `image`
/// and Pillow (rgba16_pngsuite.png says gamma 1.0).
fn png_reference_rgba8(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Sixteen);
    let samples: Vec<f64> = buf[..info.buffer_size()]
        .chunks_exact(2)
        .map(|s| f64::from(u16::from_be_bytes([s[0], s[1]])) / 65535.0)
        .collect();
    let channels = info.color_type.samples();
    let to8 = |v: f64| (v * 255.0).round() as u8;
    let rgba = samples
        .chunks_exact(channels)
        .flat_map(|p| match channels {
            1 => [p[0], p[0], p[0], 1.0],
            2 => [p[0], p[0], p[0], p[1]],
            3 => [p[0], p[1], p[2], 1.0],
            _ => [p[0], p[1], p[2], p[3]],
        })
        .map(to8)
        .collect();
    (info.width, info.height, rgba)
}

/// Mean absolute difference of two RGBA images: of the colour channels weighted by the
/// reference's alpha (colours under full transparency are irrelevant), and of alpha.
fn rgba_diff(ours: &[u8], reference: &[u8]) -> (f64, f64) {
    let (mut colour, mut weight, mut alpha) = (0.0, 0.0, 0.0);
    for (o, r) in ours.chunks_exact(4).zip(reference.chunks_exact(4)) {
        let a = f64::from(r[3]) / 255.0;
        for c in 0..3 {
            colour += a * f64::from(o[c].abs_diff(r[c]));
        }
        weight += 3.0 * a;
        alpha += f64::from(o[3].abs_diff(r[3]));
    }
    (colour / weight.max(1.0), alpha / (ours.len() / 4) as f64)
}

/// 16-bit inputs (RGB, RGBA and grey with tRNS PNGs, a 16-bit TIFF) come out as their
/// rounded 8-bit pixels. All four fit inside the largest box, so the largest version is the
/// picture itself, converted and encoded: a byte-order mix-up, a truncation to the high byte
/// done wrong, a lost tRNS or a lost alpha would each show as a large difference.
#[test]
fn sixteen_bit_inputs_match_their_rounded_samples() {
    let dir = testdata();
    for file in [
        "png/rgb16_flag.png",
        "png/rgba16_pngsuite.png",
        "png/gray16_trns.png",
        "tiff/rgb16.tiff",
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let (w, h, reference) = if file.ends_with(".png") {
            png_reference_rgba8(&bytes)
        } else {
            let decoded = image::load_from_memory(&bytes).unwrap();
            assert!(
                matches!(decoded, image::DynamicImage::ImageRgb16(_)),
                "{file}"
            );
            let rgba16 = decoded.into_rgba16();
            let (w, h) = rgba16.dimensions();
            let to8 = |v: u16| (f64::from(v) * 255.0 / 65535.0).round() as u8;
            (w, h, rgba16.into_raw().into_iter().map(to8).collect())
        };
        let r = render(&bytes, Limits::default()).unwrap();
        let largest = &r.versions[0];
        assert_eq!(largest.size, Size::new(w, h), "{file}");
        let has_alpha = reference.chunks_exact(4).any(|p| p[3] != 255);
        assert_eq!(largest.content_type == "image/png", has_alpha, "{file}");
        // A JPEG version is compared with the reference put through the same JPEG encoder, so
        // only the conversion is measured, not the encoder's noise.
        let reference = if has_alpha {
            reference
        } else {
            let rgb: Vec<u8> = reference
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            let jpeg = gallery_render::turbo::encode_rgb(&rgb, w, h, gallery_render::JPEG_QUALITY)
                .unwrap();
            image::load_from_memory(&jpeg)
                .unwrap()
                .into_rgba8()
                .into_raw()
        };
        let ours = image::load_from_memory(&largest.data).unwrap().into_rgba8();
        let (colour, alpha) = rgba_diff(ours.as_raw(), &reference);
        // Measured: identical. Truncating instead of rounding would show as about 0.5.
        assert!(
            colour < 0.05 && alpha < 0.05,
            "{file}: colour differs by {colour:.2} levels on average, alpha by {alpha:.2}"
        );
    }
}

/// Mean colour (and alpha) of HEIF/AVIF files as pillow-heif 1.8.1 (libheif) decodes them.
const HEIF_MEANS: [(&str, &[f64]); 4] = [
    ("heic_avif/hopper.heif", &[89.8, 80.2, 95.4]),
    ("heic_avif/hopper.avif", &[89.8, 79.8, 95.6]),
    ("heic_avif/transparency.avif", &[73.3, 176.4, 119.7, 200.5]),
    ("heic_avif/sample_640x426.heif", &[62.8, 51.1, 43.6]),
];

/// HEIC and AVIF decode (through libheif) to the colours another libheif-based decoder gets, a
/// wrong YCbCr matrix or range would shift the means by several levels, and alpha survives
/// into a PNG version.
#[test]
fn heic_and_avif_decode_to_the_expected_colours() {
    let dir = testdata();
    let mut checked = 0;
    for (file, want) in HEIF_MEANS {
        if !dir.join(file).is_file() {
            continue;
        }
        checked += 1;
        let r = render(&std::fs::read(dir.join(file)).unwrap(), Limits::default()).unwrap();
        let largest = &r.versions[0];
        assert_eq!(
            largest.size, r.upright,
            "{file} fits inside the largest box"
        );
        let decoded = image::load_from_memory(&largest.data).unwrap();
        let (channels, samples) = if want.len() == 4 {
            assert_eq!(largest.content_type, "image/png", "{file} has alpha");
            (4, decoded.into_rgba8().into_raw())
        } else {
            assert_eq!(largest.content_type, "image/jpeg", "{file}");
            (3, decoded.into_rgb8().into_raw())
        };
        let n = (samples.len() / channels) as f64;
        for (c, expected) in want.iter().enumerate() {
            let mean = samples
                .iter()
                .skip(c)
                .step_by(channels)
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / n;
            assert!(
                (mean - expected).abs() < 1.0,
                "{file} channel {c}: mean {mean:.1}, pillow-heif {expected}"
            );
        }
    }
    assert!(
        checked >= 3,
        "only {checked} HEIF/AVIF files in {}",
        dir.display()
    );
}
