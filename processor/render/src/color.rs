//! Colour: embedded ICC profiles are honoured by converting to sRGB (moxcms), so an Adobe RGB
//! or Display P3 photo doesn't come out dull, and CMYK JPEGs with a profile are converted
//! through it rather than by the naive formula.
//!
//! RGB conversions run on the first (largest) version rather than the full original: colour
//! transforms are per pixel and commute with resizing to within rounding, and the largest
//! version has at most 6.25 MP whatever the original's size. Profiles whose primaries are
//! sRGB's are left alone (most camera and phone JPEGs say "sRGB").

use moxcms::{ColorProfile, DataColorSpace, Layout, TransformOptions};

/// A parsed source profile that needs converting, or `None` for "already sRGB, or unusable".
pub fn rgb_profile_needing_conversion(icc: &[u8]) -> Option<ColorProfile> {
    let profile = ColorProfile::new_from_slice(icc).ok()?;
    if profile.color_space != DataColorSpace::Rgb || has_srgb_primaries(&profile) {
        return None;
    }
    Some(profile)
}

fn has_srgb_primaries(p: &ColorProfile) -> bool {
    let srgb = ColorProfile::new_srgb();
    let close = |a: &moxcms::Xyzd, b: &moxcms::Xyzd| {
        (a.x - b.x).abs() < 0.003 && (a.y - b.y).abs() < 0.003 && (a.z - b.z).abs() < 0.003
    };
    close(&p.red_colorant, &srgb.red_colorant)
        && close(&p.green_colorant, &srgb.green_colorant)
        && close(&p.blue_colorant, &srgb.blue_colorant)
}

/// Converts interleaved RGB (`channels` = 3) or RGBA (4) pixels to sRGB in place.
pub fn convert_rgb_in_place(
    profile: &ColorProfile,
    pixels: &mut [u8],
    channels: usize,
) -> Result<(), String> {
    let layout = if channels == 4 {
        Layout::Rgba
    } else {
        Layout::Rgb
    };
    let transform = profile
        .create_transform_8bit(
            layout,
            &ColorProfile::new_srgb(),
            layout,
            TransformOptions::default(),
        )
        .map_err(|e| format!("colour profile: {e}"))?;
    let src = pixels.to_vec();
    transform
        .transform(&src, pixels)
        .map_err(|e| format!("colour conversion: {e}"))
}

/// A CMYK profile, if `icc` is one.
pub fn cmyk_profile(icc: &[u8]) -> Option<ColorProfile> {
    let profile = ColorProfile::new_from_slice(icc).ok()?;
    (profile.color_space == DataColorSpace::Cmyk).then_some(profile)
}

/// Converts CMYK samples (4 per pixel, Adobe-inverted as Photoshop writes them in JPEGs) to
/// sRGB through the profile.
pub fn cmyk_to_srgb(
    profile: &ColorProfile,
    cmyk: &mut [u8],
    inverted: bool,
) -> Result<Vec<u8>, String> {
    if inverted {
        for v in cmyk.iter_mut() {
            *v = 255 - *v;
        }
    }
    let transform = profile
        .create_transform_8bit(
            Layout::Rgba,
            &ColorProfile::new_srgb(),
            Layout::Rgb,
            TransformOptions::default(),
        )
        .map_err(|e| format!("colour profile: {e}"))?;
    let mut rgb = vec![0u8; cmyk.len() / 4 * 3];
    transform
        .transform(cmyk, &mut rgb)
        .map_err(|e| format!("colour conversion: {e}"))?;
    Ok(rgb)
}

/// YCCK as stored in Adobe JPEGs to true CMYK: the first three channels are YCbCr-encoded
/// (JFIF full-range equations) and come out as C, M, Y; K is stored inverted. (Checked against
/// Pillow/libjpeg on the SWOP sample: the channel means agree.)
pub fn ycck_to_cmyk_in_place(samples: &mut [u8]) {
    for px in samples.chunks_exact_mut(4) {
        let (y, cb, cr) = (
            f32::from(px[0]),
            f32::from(px[1]) - 128.0,
            f32::from(px[2]) - 128.0,
        );
        px[0] = (y + 1.402 * cr).round().clamp(0.0, 255.0) as u8;
        px[1] = (y - 0.344_136 * cb - 0.714_136 * cr)
            .round()
            .clamp(0.0, 255.0) as u8;
        px[2] = (y + 1.772 * cb).round().clamp(0.0, 255.0) as u8;
        px[3] = 255 - px[3];
    }
}
