//! What a decoder hands the pipeline, and the size check every decoder applies before it
//! allocates pixels: a leaf, shared by the general decoder ([`crate::decode`]) and the HEIF
//! one ([`crate::heif`]), which it dispatches to.

use gallery_schema::{ErrorCode, Size};
use image::DynamicImage;

use crate::{Limits, RenderError};

/// A decoded image, upright, with the colour profile its pixels still need converting from.
pub struct Decoded {
    /// Upright pixels; possibly decoded at a reduced scale (JPEG DCT scaling), never smaller
    /// than the largest version needs.
    pub image: DynamicImage,
    /// The original's upright size: the versions are fitted from it.
    pub original: Size,
    pub profile: Option<moxcms::ColorProfile>,
}

pub(crate) fn check_size(size: Size, limits: Limits) -> Result<(), RenderError> {
    if size.width == 0 || size.height == 0 {
        return Err(RenderError::new(
            ErrorCode::CorruptImage,
            "the image has no pixels",
        ));
    }
    if size.width > limits.max_side || size.height > limits.max_side {
        return Err(RenderError::new(
            ErrorCode::ImageTooLarge,
            format!(
                "{}x{} exceeds the maximum side of {} px",
                size.width, size.height, limits.max_side
            ),
        ));
    }
    if size.pixels() > limits.max_pixels {
        return Err(RenderError::new(
            ErrorCode::ImageTooLarge,
            format!(
                "{}x{} is {} pixels, over the limit of {}",
                size.width,
                size.height,
                size.pixels(),
                limits.max_pixels
            ),
        ));
    }
    Ok(())
}
