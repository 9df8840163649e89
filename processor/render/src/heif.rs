//! HEIC/HEIF and AVIF through libheif (the `libheif-rs` crate builds its bundled libheif; the
//! HEVC and AV1 decoding is Debian's libde265 and dav1d). Limits are checked on the primary
//! image's size from the container before anything is decoded. libheif applies the container's
//! rotation and mirroring (`irot`/`imir`), which is where HEIF keeps orientation, so EXIF
//! orientation is not applied again; an embedded ICC profile goes to the same sRGB conversion
//! as a JPEG's.

use std::sync::LazyLock;

use gallery_schema::{ErrorCode, Size};
use image::DynamicImage;
use libheif_rs::{
    ColorPrimaries, ColorProfile, ColorSpace, DecodingOptions, HeifContext, HeifError,
    HeifErrorCode, HeifErrorSubCode, LibHeif, RgbChroma, TransferCharacteristics,
};

use crate::decoded::{Decoded, check_size};
use crate::{Limits, RenderError, color};

/// libheif initialised once for the process (its decoders are registered by `heif_init`) and
/// never deinitialised: a `LibHeif` per call would call `heif_deinit` after every image.
static LIBHEIF: LazyLock<LibHeif> = LazyLock::new(LibHeif::new);

/// Decodes the primary image of a HEIF/AVIF file, upright, within `limits`.
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Decoded, RenderError> {
    let lib = &*LIBHEIF;
    let mut context = HeifContext::read_from_bytes(bytes).map_err(classify)?;
    // One job, one core: the processor runs as many jobs as there are cores. This covers
    // libheif's grid tiles; the codecs' own threads are set in the decoding options below.
    context.set_max_decoding_threads(0);
    // libheif's own limits as a second line behind ours: no more pixels than we allow, and a
    // bounded total allocation (the largest legitimate decode, 100 MP RGBA plus the YCbCr
    // planes, stays under 1 GB).
    let mut security = context.security_limits();
    security.set_max_image_size_pixels(limits.max_pixels);
    security.set_max_total_memory(1 << 30);
    context.set_security_limits(&security).map_err(classify)?;
    let handle = context.primary_image_handle().map_err(classify)?;
    // The coded size (`ispe`) before any crop, and the size after the container's crop and
    // rotation (upright): a huge image cropped to a small one must not slip through.
    let coded = Size::new(
        u32::try_from(handle.ispe_width()).unwrap_or(u32::MAX),
        u32::try_from(handle.ispe_height()).unwrap_or(u32::MAX),
    );
    check_size(coded, limits)?;
    let upright = Size::new(handle.width(), handle.height());
    check_size(upright, limits)?;
    let alpha = handle.has_alpha_channel();
    let chroma = if alpha {
        RgbChroma::Rgba
    } else {
        RgbChroma::Rgb
    };
    let mut options = DecodingOptions::new()
        .ok_or_else(|| RenderError::new(ErrorCode::Internal, "libheif decoding options"))?;
    // dav1d would otherwise start a thread per core for every job.
    options.set_num_codec_threads(1);
    let image = lib
        .decode(&handle, ColorSpace::Rgb(chroma), Some(options))
        .map_err(classify)?;
    let image = interleaved_to_image(&image, alpha)?;
    // An ICC profile if there is one, else the CICP (nclx) colour signalled by the container
    // or the stream: libheif uses the latter only to pick the YCbCr matrix.
    let profile = match handle
        .color_profile_raw()
        .filter(|p| matches!(&p.profile_type().0, b"prof" | b"rICC"))
    {
        Some(icc) => color::rgb_profile_needing_conversion(&icc.data),
        None => handle
            .color_profile_nclx()
            .and_then(|n| nclx_profile(n.color_primaries(), n.transfer_characteristics())),
    };
    Ok(Decoded {
        original: Size::new(image.width(), image.height()),
        image,
        profile,
    })
}

/// libheif's decoded interleaved RGB(A) plane as an image, with straight alpha.
fn interleaved_to_image(
    image: &libheif_rs::Image,
    alpha: bool,
) -> Result<DynamicImage, RenderError> {
    let planes = image.planes();
    let plane = planes.interleaved.ok_or_else(|| {
        RenderError::new(ErrorCode::Internal, "libheif returned no interleaved plane")
    })?;
    let channels = if alpha { 4 } else { 3 };
    let row = plane.width as usize * channels;
    // `bits_per_pixel` is per channel here; interleaved RGB(A) is always 8-bit (libheif
    // converts deeper sources to it).
    if plane.bits_per_pixel != 8 || plane.stride < row {
        return Err(RenderError::new(
            ErrorCode::Internal,
            format!(
                "unexpected HEIF plane layout ({} bpp)",
                plane.bits_per_pixel
            ),
        ));
    }
    let mut pixels = Vec::with_capacity(row * plane.height as usize);
    for y in 0..plane.height as usize {
        pixels.extend_from_slice(&plane.data[y * plane.stride..y * plane.stride + row]);
    }
    let size_error = || RenderError::new(ErrorCode::Internal, "decoded HEIF size");
    // libheif flags premultiplied alpha but hands the samples over as stored; the pipeline
    // works on straight alpha.
    if alpha && image.is_premultiplied_alpha() {
        unpremultiply(&mut pixels);
    }
    let decoded = if alpha {
        DynamicImage::ImageRgba8(
            image::RgbaImage::from_raw(plane.width, plane.height, pixels).ok_or_else(size_error)?,
        )
    } else {
        DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(plane.width, plane.height, pixels).ok_or_else(size_error)?,
        )
    };
    Ok(decoded)
}

/// The source profile for wide-gamut SDR colour signalled only by CICP: Display P3 and BT.2020
/// primaries with an SDR transfer. sRGB/BT.709 needs nothing. PQ and HLG (HDR) are left as
/// decoded: a conversion without tone mapping would clip them just as badly.
fn nclx_profile(
    primaries: ColorPrimaries,
    transfer: TransferCharacteristics,
) -> Option<moxcms::ColorProfile> {
    use TransferCharacteristics as T;
    let sdr = matches!(
        transfer,
        T::IEC_61966_2_1
            | T::ITU_R_BT_709_5
            | T::ITU_R_BT_601_6
            | T::ITU_R_BT_2020_2_10bit
            | T::ITU_R_BT_2020_2_12bit
            | T::Unspecified
    );
    match primaries {
        _ if !sdr => None,
        ColorPrimaries::SMPTE_EG_432_1 => Some(moxcms::ColorProfile::new_display_p3()),
        ColorPrimaries::ITU_R_BT_2020_2_and_2100_0 => Some(moxcms::ColorProfile::new_bt2020()),
        _ => None,
    }
}

/// Premultiplied RGBA to straight alpha, in place.
fn unpremultiply(rgba: &mut [u8]) {
    for p in rgba.chunks_exact_mut(4) {
        let a = u32::from(p[3]);
        if a != 0 && a != 255 {
            for c in &mut p[..3] {
                *c = ((u32::from(*c) * 255 + a / 2) / a).min(255) as u8;
            }
        }
    }
}

/// Broken or hostile files, including streams the decoder gives up on, are `corrupt_image`;
/// files needing a codec or feature we don't have (HEIF holding JPEG 2000, VVC, ...) are
/// `unsupported_format`; the library failing in itself
/// (out of memory, misuse) is `internal`, not blamed on the file.
fn classify(e: HeifError) -> RenderError {
    if matches!(e.sub_code, HeifErrorSubCode::SecurityLimitExceeded) {
        // Too many pixels, tiles, items or bytes: a hostile file, not our failure.
        return RenderError::new(ErrorCode::ImageTooLarge, format!("HEIF: {}", e.message));
    }
    if matches!(e.sub_code, HeifErrorSubCode::NoOrInvalidPrimaryItem) {
        // An image sequence (animated AVIF, HEIF burst) with no still image: valid, not ours.
        return RenderError::new(
            ErrorCode::UnsupportedFormat,
            format!(
                "HEIF without a still image (an image sequence?) is not supported: {}",
                e.message
            ),
        );
    }
    let code = match e.code {
        HeifErrorCode::UnsupportedFileType | HeifErrorCode::UnsupportedFeature => {
            ErrorCode::UnsupportedFormat
        }
        HeifErrorCode::UsageError
        | HeifErrorCode::MemoryAllocationError
        | HeifErrorCode::PluginLoadingError
        | HeifErrorCode::ContextCreateFailed => ErrorCode::Internal,
        _ => ErrorCode::CorruptImage,
    };
    RenderError::new(code, format!("HEIF: {}", e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cicp_wide_gamut_sdr_gets_a_profile_and_srgb_or_hdr_does_not() {
        use TransferCharacteristics as T;
        let p3 = nclx_profile(ColorPrimaries::SMPTE_EG_432_1, T::IEC_61966_2_1).unwrap();
        let reference = moxcms::ColorProfile::new_display_p3();
        assert_eq!(p3.red_colorant.x, reference.red_colorant.x);
        assert!(
            nclx_profile(
                ColorPrimaries::ITU_R_BT_2020_2_and_2100_0,
                T::ITU_R_BT_709_5
            )
            .is_some()
        );
        assert!(nclx_profile(ColorPrimaries::ITU_R_BT_709_5, T::IEC_61966_2_1).is_none());
        assert!(
            nclx_profile(
                ColorPrimaries::ITU_R_BT_2020_2_and_2100_0,
                T::ITU_R_BT_2100_0_PQ
            )
            .is_none()
        );
        assert!(nclx_profile(ColorPrimaries::SMPTE_EG_432_1, T::ITU_R_BT_2100_0_HLG).is_none());
    }

    #[test]
    fn premultiplied_alpha_becomes_straight() {
        let mut px = [50, 100, 0, 128, 10, 20, 30, 255, 7, 7, 7, 0];
        unpremultiply(&mut px);
        assert_eq!(px, [100, 199, 0, 128, 10, 20, 30, 255, 7, 7, 7, 0]);
    }
}
