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
    ColorProfile, ColorSpace, HeifContext, HeifError, HeifErrorCode, LibHeif, RgbChroma,
};

use crate::decode::{Decoded, check_size};
use crate::{Limits, RenderError, color};

/// libheif initialised once for the process (its decoders are registered by `heif_init`), before
/// any file is read, and never deinitialised: a `LibHeif` per call would deinitialise it after
/// each image, and reading a file before the first `heif_init` fails.
static LIBHEIF: LazyLock<LibHeif> = LazyLock::new(LibHeif::new);

/// Decodes the primary image of a HEIF/AVIF file, upright, within `limits`.
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Decoded, RenderError> {
    let lib = &*LIBHEIF;
    let mut context = HeifContext::read_from_bytes(bytes).map_err(classify)?;
    // One job, one core: the processor runs as many jobs as there are cores.
    context.set_max_decoding_threads(0);
    // libheif's own security limits stay at its defaults (1 Gpx, 2 GB...): ours are checked
    // below, before decoding. Overriding them through `SecurityLimits` copied a struct that
    // came out with a 14-byte memory limit on a clean build, refusing every file.
    let handle = context.primary_image_handle().map_err(classify)?;
    // The size after the container's transformations, i.e. upright.
    let upright = Size::new(handle.width(), handle.height());
    check_size(upright, limits)?;
    let alpha = handle.has_alpha_channel();
    let chroma = if alpha {
        RgbChroma::Rgba
    } else {
        RgbChroma::Rgb
    };
    let image = lib
        .decode(&handle, ColorSpace::Rgb(chroma), None)
        .map_err(classify)?;
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
    let image = if alpha {
        DynamicImage::ImageRgba8(
            image::RgbaImage::from_raw(plane.width, plane.height, pixels).ok_or_else(size_error)?,
        )
    } else {
        DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(plane.width, plane.height, pixels).ok_or_else(size_error)?,
        )
    };
    let profile = handle
        .color_profile_raw()
        .filter(|p| matches!(&p.profile_type().0, b"prof" | b"rICC"))
        .and_then(|p| color::rgb_profile_needing_conversion(&p.data));
    Ok(Decoded {
        original: Size::new(image.width(), image.height()),
        image,
        profile,
    })
}

/// Broken or hostile files, including streams the decoder gives up on, are `corrupt_image`;
/// files needing a codec or feature we don't have (HEIF holding JPEG 2000, VVC, ...) are
/// `unsupported_format`; the library failing in itself
/// (out of memory, misuse) is `internal`, not blamed on the file.
fn classify(e: HeifError) -> RenderError {
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
