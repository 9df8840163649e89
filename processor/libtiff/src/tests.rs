use std::io::Cursor;

use tiff::encoder::{TiffEncoder, colortype};
use tiff::tags::Tag;

use super::*;

const LIMITS: Limits = Limits {
    max_pixels: 100_000_000,
    max_side: 30_000,
};

fn testdata(name: &str) -> Vec<u8> {
    let path = format!("{}/../../testdata/tiff/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn mean(samples: &[u8], channels: usize) -> Vec<f64> {
    let n = (samples.len() / channels) as f64;
    (0..channels)
        .map(|c| {
            samples
                .iter()
                .skip(c)
                .step_by(channels)
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / n
        })
        .collect()
}

/// A 3x2 RGBA TIFF with unassociated alpha and an Orientation tag.
fn rgba_tiff(pixels: &[u8], orientation: u16) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let mut encoder = TiffEncoder::new(&mut out).unwrap();
    let mut image = encoder.new_image::<colortype::RGBA8>(3, 2).unwrap();
    image
        .encoder()
        .write_tag(Tag::Orientation, orientation)
        .unwrap();
    // ExtraSamples = 2, unassociated (without it libtiff takes a fourth sample as associated).
    image.encoder().write_tag(Tag::ExtraSamples, 2u16).unwrap();
    image.write_data(pixels).unwrap();
    out.into_inner()
}

#[test]
fn premultiplied_words_come_out_straight() {
    // Words are ABGR: red in the low byte.
    let opaque = [0xff_30_20_10u32, 0xff_00_00_ff];
    assert_eq!(
        unpack(&opaque, true),
        Pixels::Rgb(vec![0x10, 0x20, 0x30, 0xff, 0, 0])
    );
    // Half-transparent red premultiplied to 0x80; transparent; colour over alpha clamped.
    let translucent = [0x80_00_00_80u32, 0x00_00_00_00, 0x10_00_00_ff];
    assert_eq!(
        unpack(&translucent, true),
        Pixels::Rgba(vec![255, 0, 0, 0x80, 0, 0, 0, 0, 255, 0, 0, 0x10])
    );
    // Words libtiff copied as stored keep their colour.
    assert_eq!(
        unpack(&[0x80_00_00_80u32], false),
        Pixels::Rgba(vec![0x80, 0, 0, 0x80])
    );
}

/// Grey with alpha, which the `tiff` crate's encoder has no colour type for.
struct GreyAlpha8;
impl colortype::ColorType for GreyAlpha8 {
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
fn grey_with_unassociated_alpha_keeps_its_grey() {
    // libtiff copies contiguous 8-bit grey+alpha as stored (no premultiplying): a grey of 200
    // at alpha 128 must stay 200, not be divided by the alpha. With associated alpha (1) the
    // stored 200 is already premultiplied: straight, it is over full and clamps to 255.
    for (extra, want) in [(2u16, 200u8), (1, 255)] {
        let mut out = Cursor::new(Vec::new());
        let mut encoder = TiffEncoder::new(&mut out).unwrap();
        let mut image = encoder.new_image::<GreyAlpha8>(2, 1).unwrap();
        image.encoder().write_tag(Tag::ExtraSamples, extra).unwrap();
        image.write_data(&[200, 128, 10, 255]).unwrap();
        let decoded = decode_first_page(&out.into_inner(), LIMITS).unwrap();
        let Pixels::Rgba(rgba) = decoded.pixels else {
            panic!("translucent: RGBA");
        };
        assert!(
            rgba[0].abs_diff(want) <= 1,
            "ExtraSamples {extra}: {rgba:?}"
        );
        assert_eq!((rgba[3], rgba[4], rgba[7]), (128, 10, 255));
    }
}

#[test]
fn a_compression_this_libtiff_lacks_is_unsupported_not_damaged() {
    // Compression 34712 (JPEG 2000, as some scanners write it): libtiff opens the file but
    // has no codec for it.
    let mut out = Cursor::new(Vec::new());
    let mut encoder = TiffEncoder::new(&mut out).unwrap();
    let mut image = encoder.new_image::<colortype::RGB8>(2, 2).unwrap();
    image
        .encoder()
        .write_tag(Tag::Compression, 34712u16)
        .unwrap();
    image.write_data(&[0; 12]).unwrap();
    let Err(Error::Unsupported(reason)) = decode_first_page(&out.into_inner(), LIMITS) else {
        panic!("an unknown codec is unsupported");
    };
    assert!(reason.contains("34712"), "{reason}");
}

#[test]
fn rgba_comes_back_in_stored_order_with_its_orientation_and_straight_alpha() {
    #[rustfmt::skip]
    let pixels = [
        255, 0, 0, 255,    0, 255, 0, 255,    0, 0, 255, 255,
        200, 100, 50, 128, 10, 20, 30, 255,   0, 0, 0, 0,
    ];
    let decoded = decode_first_page(&rgba_tiff(&pixels, 6), LIMITS).unwrap();
    assert_eq!((decoded.width, decoded.height), (3, 2));
    assert_eq!(decoded.orientation, 6, "reported, not applied");
    let Pixels::Rgba(got) = decoded.pixels else {
        panic!("a translucent image must keep its alpha");
    };
    // Premultiplying to 8 bits and back loses a little where alpha is low.
    for (i, (&g, &p)) in got.iter().zip(&pixels).enumerate() {
        let alpha = pixels[i / 4 * 4 + 3];
        if alpha == 0 {
            assert_eq!(got[i / 4 * 4 + 3], 0, "pixel {}", i / 4);
            continue;
        }
        assert!(g.abs_diff(p) <= 1, "sample {i}: {g} for {p}");
    }
}

#[test]
fn old_style_jpeg_decodes_with_its_colours() {
    // libtiff's own OJPEG test file (YCbCr 2:1 subsampling, several strips), the layout the
    // pure-Rust decoders refuse. The means are tiff2rgba's (libtiff 4.5's RGBA tool) for the
    // same file: this checks the wiring (channel order, rows, alpha), not libtiff's decoder.
    let decoded =
        decode_first_page(&testdata("ojpeg_chewey_subsamp21_multi_strip.tiff"), LIMITS).unwrap();
    assert_eq!((decoded.width, decoded.height), (392, 575));
    let Pixels::Rgb(rgb) = decoded.pixels else {
        panic!("an opaque image comes out RGB");
    };
    let m = mean(&rgb, 3);
    for (got, want) in m.iter().zip([113.41, 87.95, 71.01]) {
        assert!((got - want).abs() < 0.5, "mean {m:?}");
    }
}

#[test]
fn grey_with_alpha_and_webp_compression_decode() {
    let grey = decode_first_page(&testdata("minisblack-2c-8b-alpha.tiff"), LIMITS).unwrap();
    assert_eq!((grey.width, grey.height), (64, 64));
    let Pixels::Rgba(rgba) = grey.pixels else {
        panic!("grey with alpha keeps its alpha");
    };
    let m = mean(&rgba, 4);
    assert!((m[3] - 121.11).abs() < 0.5, "alpha mean {m:?}");
    assert!(
        rgba.chunks_exact(4).all(|p| p[0] == p[1] && p[1] == p[2]),
        "grey"
    );

    let webp = decode_first_page(
        &testdata("webp_lossless_rgba_alpha_fully_opaque.tif"),
        LIMITS,
    )
    .unwrap();
    assert_eq!((webp.width, webp.height), (20, 20));
    assert!(matches!(webp.pixels, Pixels::Rgb(_)), "fully opaque: RGB");
}

#[test]
fn sizes_over_the_limits_are_refused_before_decoding() {
    let bytes = rgba_tiff(&[0; 24], 1);
    let small = Limits {
        max_pixels: 5,
        max_side: 30_000,
    };
    assert_eq!(
        decode_first_page(&bytes, small),
        Err(Error::TooLarge {
            width: 3,
            height: 2
        })
    );
    let narrow = Limits {
        max_pixels: 100,
        max_side: 2,
    };
    assert!(matches!(
        decode_first_page(&bytes, narrow),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn broken_input_is_an_error_with_libtiffs_reason() {
    let Err(Error::Open(reason)) = decode_first_page(b"not a tiff at all", LIMITS) else {
        panic!("garbage must not open");
    };
    assert!(!reason.is_empty());
    assert!(decode_first_page(&[], LIMITS).is_err());

    // Every truncation of a real file fails cleanly or decodes; none crashes.
    let whole = testdata("ojpeg_chewey_subsamp21_multi_strip.tiff");
    for len in (0..whole.len()).step_by(997) {
        let _ = decode_first_page(&whole[..len], LIMITS);
    }
    let cut = &whole[..whole.len() / 2];
    assert!(
        decode_first_page(cut, LIMITS).is_err(),
        "half the file is missing"
    );
}

#[test]
fn layouts_the_rgba_interface_cant_convert_are_unsupported() {
    // 16-bit CMYK: libtiff opens it but its RGBA interface takes 8-bit CMYK only.
    let mut out = Cursor::new(Vec::new());
    let mut encoder = TiffEncoder::new(&mut out).unwrap();
    encoder
        .write_image::<colortype::CMYK16>(2, 2, &[1000u16; 16])
        .unwrap();
    let Err(Error::Unsupported(reason)) = decode_first_page(&out.into_inner(), LIMITS) else {
        panic!("16-bit CMYK is not convertible by libtiff");
    };
    assert!(!reason.is_empty());
}
