//! The pixel pipeline: turning an original's bytes into the four versions. CPU only, no I/O: callers run it on a
//! blocking thread. Limits are checked from the header, before any pixel buffer is allocated.
//!
//! Pipeline: sniff the format from the bytes (never the name or the declared type), read the
//! header, check limits, decode once, apply the EXIF orientation, then resize down the cascade
//! (each version from the previous, larger one) with fast_image_resize, and encode: JPEG for
//! opaque images, PNG when any pixel is not fully opaque. Encoders write no metadata, so no
//! EXIF/GPS/XMP/IPTC reaches a version.

pub mod budget;
pub mod color;
mod decode;
mod decoded;
pub mod heif;
pub mod jpeg;
pub mod png_exif;
pub mod tiff_extra;
pub mod turbo;

use fast_image_resize::{self as fr, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image};
use gallery_schema::{ErrorCode, RENDITIONS, Size, VersionName, fit_inside};
use image::{DynamicImage, ImageError};

pub use decode::decode;
pub use decoded::Decoded;

/// Refusal thresholds, checked before decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_pixels: u64,
    pub max_side: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: 100_000_000,
            max_side: 30_000,
        }
    }
}

/// JPEG quality of the largest version (each rendition has its own in
/// [`gallery_schema::RENDITIONS`]; all 85 today, the knee of the size/quality curve measured on
/// real photos, see docs/IMAGE_PIPELINE.md, "Output").
pub const JPEG_QUALITY: u8 = RENDITIONS[0].jpeg_quality;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RenderError {
    pub code: ErrorCode,
    pub message: String,
}

impl RenderError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RenderedVersion {
    pub version: VersionName,
    pub size: Size,
    pub data: Vec<u8>,
    pub content_type: &'static str,
    pub extension: &'static str,
}

#[derive(Debug, Clone)]
pub struct Rendered {
    /// The original's size after orientation.
    pub upright: Size,
    /// Largest first, as rendered.
    pub versions: Vec<RenderedVersion>,
    /// The ThumbHash placeholder (about 25 bytes), computed from the smallest version.
    pub thumbhash: Vec<u8>,
}

/// Renders all versions of the image in `bytes`.
pub fn render(bytes: &[u8], limits: Limits) -> Result<Rendered, RenderError> {
    render_decoded(decode(bytes, limits)?)
}

pub fn render_decoded(decoded: Decoded) -> Result<Rendered, RenderError> {
    let Decoded {
        image,
        original: upright,
        profile,
    } = decoded;
    let keep_alpha = has_transparency(&image);
    // The pixels may be fewer than the original's (DCT-scaled decode); targets come from the
    // original's size, the first resize from whatever was decoded.
    let (decoded_w, decoded_h) = (image.width(), image.height());
    let (pixel_type, buffer) = if keep_alpha {
        (PixelType::U8x4, image.into_rgba8().into_raw())
    } else {
        (PixelType::U8x3, image.into_rgb8().into_raw())
    };
    let mut current = Image::from_vec_u8(decoded_w, decoded_h, buffer, pixel_type)
        .map_err(|e| RenderError::new(ErrorCode::Internal, e.to_string()))?;
    let mut resizer = Resizer::new();
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fr::FilterType::Lanczos3));
    let mut versions = Vec::with_capacity(VersionName::CASCADE.len());
    for rendition in &RENDITIONS {
        let version = rendition.name;
        let target = fit_inside(upright, rendition.bounds);
        if target != Size::new(current.width(), current.height()) {
            let mut next = Image::new(target.width, target.height, pixel_type);
            resizer
                .resize(&current, &mut next, &options)
                .map_err(|e| RenderError::new(ErrorCode::Internal, e.to_string()))?;
            current = next;
        }
        // Once, on the largest version: every smaller one is derived from it.
        if let Some(profile) = &profile
            && version == VersionName::CASCADE[0]
        {
            let channels = if keep_alpha { 4 } else { 3 };
            color::convert_rgb_in_place(profile, current.buffer_mut(), channels)
                .map_err(|e| RenderError::new(ErrorCode::Internal, e))?;
        }
        let (data, content_type, extension) = encode(&current, keep_alpha, rendition.jpeg_quality)?;
        versions.push(RenderedVersion {
            version,
            size: target,
            data,
            content_type,
            extension,
        });
    }
    // `current` is the smallest version now, in sRGB: the placeholder is made from it.
    let thumbhash = placeholder(&current, &mut resizer)?;
    Ok(Rendered {
        upright,
        versions,
        thumbhash,
    })
}

/// The largest side ThumbHash's encoder takes (it asserts on more).
const THUMBHASH_MAX_SIDE: u32 = 100;

/// The ThumbHash of `image` (RGB or RGBA, 8 bits), scaled to fit in 100x100 first.
fn placeholder(image: &Image<'_>, resizer: &mut Resizer) -> Result<Vec<u8>, RenderError> {
    let target = fit_inside(
        Size::new(image.width(), image.height()),
        Size::new(THUMBHASH_MAX_SIDE, THUMBHASH_MAX_SIDE),
    );
    let mut small = Image::new(target.width, target.height, image.pixel_type());
    resizer
        .resize(
            image,
            &mut small,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fr::FilterType::Bilinear)),
        )
        .map_err(|e| RenderError::new(ErrorCode::Internal, e.to_string()))?;
    let rgba = match small.pixel_type() {
        PixelType::U8x4 => small.into_vec(),
        _ => small
            .buffer()
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], u8::MAX])
            .collect(),
    };
    Ok(thumbhash::rgba_to_thumb_hash(
        target.width as usize,
        target.height as usize,
        &rgba,
    ))
}

/// True when the image has an alpha channel with at least one pixel that isn't opaque.
fn has_transparency(image: &DynamicImage) -> bool {
    match image {
        DynamicImage::ImageLumaA8(i) => i.pixels().any(|p| p.0[1] != u8::MAX),
        DynamicImage::ImageRgba8(i) => i.pixels().any(|p| p.0[3] != u8::MAX),
        DynamicImage::ImageLumaA16(i) => i.pixels().any(|p| p.0[1] != u16::MAX),
        DynamicImage::ImageRgba16(i) => i.pixels().any(|p| p.0[3] != u16::MAX),
        DynamicImage::ImageRgba32F(i) => i.pixels().any(|p| p.0[3] < 1.0),
        _ => false,
    }
}

fn encode(
    image: &Image<'_>,
    alpha: bool,
    quality: u8,
) -> Result<(Vec<u8>, &'static str, &'static str), RenderError> {
    let mut out = Vec::new();
    let internal = |e: ImageError| RenderError::new(ErrorCode::Internal, e.to_string());
    if alpha {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new_with_quality(
            &mut out,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::Adaptive,
        )
        .write_image(
            image.buffer(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgba8,
        )
        .map_err(internal)?;
        Ok((out, "image/png", "png"))
    } else {
        match turbo::encode_rgb(image.buffer(), image.width(), image.height(), quality) {
            Ok(data) => out = data,
            Err(_) => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
                .encode(
                    image.buffer(),
                    image.width(),
                    image.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(internal)?,
        }
        Ok((out, "image/jpeg", "jpg"))
    }
}

#[cfg(test)]
mod tests;
