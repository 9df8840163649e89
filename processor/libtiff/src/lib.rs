//! The first page of a TIFF, decoded by the system's libtiff through its RGBA interface (what
//! `tiff2rgba` uses): old-style JPEG (compression 6), LogLuv, WebP, ZSTD and LERC compression,
//! grey with alpha, the old "compat" LZW, lenient fax decoding. The render tries the pure-Rust
//! decoders first and comes here only for what they refuse, so most TIFFs never reach C.
//!
//! Why FFI: libtiff is the reference reader; the variants above are each a few hundred to a few
//! thousand lines of it (old-style JPEG alone is 2,800) with no maintained Rust equivalent.
//! Why it is safe enough: it runs in the render worker processes, which the processor restarts
//! when one crashes and gives a deadline, and which hold one upload at a time; libtiff is asked
//! to refuse allocations over a limit; sizes are checked against the render limits before any
//! raster exists; every read goes through bounds-checked callbacks over the upload's bytes.
//!
//! This crate relaxes the workspace's `unsafe_code = "deny"` for its calls into C, each with a
//! SAFETY note; the C side (`src/shim.c`) holds what is easier to get right against libtiff's
//! header than declared again in Rust.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};

/// The pixels of the first page, rows top to bottom as stored (apply [`Decoded::orientation`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    /// The TIFF Orientation tag, 1..=8 as in EXIF (1 when absent).
    pub orientation: u16,
    pub pixels: Pixels,
    /// The embedded ICC profile, if any.
    pub icc: Option<Vec<u8>>,
}

/// 8-bit samples, straight (not premultiplied) alpha.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pixels {
    Rgb(Vec<u8>),
    Rgba(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a TIFF libtiff can open, or its first directory is broken.
    #[error("libtiff can't open it: {0}")]
    Open(String),
    /// Larger than the limits: nothing was decoded.
    #[error("{width}x{height} is over the size limits")]
    TooLarge { width: u32, height: u32 },
    /// A layout the RGBA interface doesn't handle (16-bit CMYK, separate-plane YCbCr, 64-bit
    /// floats...).
    #[error("libtiff can't convert it: {0}")]
    Unsupported(String),
    /// The pixel data is damaged.
    #[error("libtiff can't decode it: {0}")]
    Corrupt(String),
}

/// What a decode may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_pixels: u64,
    pub max_side: u32,
}

/// Decodes the first page of `bytes`.
pub fn decode_first_page(bytes: &[u8], limits: Limits) -> Result<Decoded, Error> {
    let mut file = File::open(bytes, limits)?;
    let (width, height, orientation) = file.header()?;
    if width == 0 || height == 0 {
        return Err(Error::Open(format!("{width}x{height} image")));
    }
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(Error::TooLarge { width, height });
    }
    file.rgba_ok()?;
    let icc = file.icc();
    let (raster, premultiplied) = file.read_rgba(width, height)?;
    Ok(Decoded {
        width,
        height,
        orientation: if (1..=8).contains(&orientation) {
            orientation
        } else {
            1
        },
        pixels: unpack(&raster, premultiplied),
        icc,
    })
}

/// libtiff's packed ABGR words (`TIFFGetR` = the low byte), their alpha premultiplied or not,
/// into 8-bit samples with straight alpha; RGB when every pixel is opaque.
pub fn unpack(raster: &[u32], premultiplied: bool) -> Pixels {
    let opaque = raster.iter().all(|&p| p >> 24 == 0xff);
    if opaque {
        let mut rgb = Vec::with_capacity(raster.len() * 3);
        for &p in raster {
            rgb.extend_from_slice(&[p as u8, (p >> 8) as u8, (p >> 16) as u8]);
        }
        return Pixels::Rgb(rgb);
    }
    let mut rgba = Vec::with_capacity(raster.len() * 4);
    for &p in raster {
        let a = (p >> 24) as u8;
        let straight = |c: u8| -> u8 {
            if !premultiplied {
                c
            } else if a == 0 {
                0
            } else {
                // Premultiplied colour can't exceed alpha in a valid file; clamp if it does.
                ((u32::from(c) * 255 + u32::from(a) / 2) / u32::from(a)).min(255) as u8
            }
        };
        rgba.extend_from_slice(&[
            straight(p as u8),
            straight((p >> 8) as u8),
            straight((p >> 16) as u8),
            a,
        ]);
    }
    Pixels::Rgba(rgba)
}

// ---- The C side ----

/// `gallery_tiff_source` in shim.c.
#[repr(C)]
struct Source {
    data: *const u8,
    len: u64,
    pos: u64,
}

/// `gallery_tiff_message` in shim.c.
#[repr(C)]
struct Message {
    text: [c_char; 1024],
}

impl Message {
    fn take(&self, fallback: &str) -> String {
        // SAFETY: `text` is NUL-terminated: it starts zeroed and the shim writes it only with
        // vsnprintf/snprintf bounded by its size, which always terminate.
        let text = unsafe { CStr::from_ptr(self.text.as_ptr()) };
        let text = text.to_string_lossy().trim().to_string();
        if text.is_empty() {
            fallback.to_string()
        } else {
            text
        }
    }
}

/// libtiff's `TIFF` handle (opaque).
#[repr(C)]
struct Tiff {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn gallery_tiff_open(
        source: *mut Source,
        max_single_alloc: isize,
        message: *mut Message,
    ) -> *mut Tiff;
    fn gallery_tiff_header(
        tif: *mut Tiff,
        width: *mut u32,
        height: *mut u32,
        orientation: *mut u16,
    ) -> c_int;
    fn gallery_tiff_icc(tif: *mut Tiff, len: *mut u32, data: *mut *const c_void) -> c_int;
    fn gallery_tiff_rgba_ok(tif: *mut Tiff, message: *mut Message) -> c_int;
    fn gallery_tiff_read_rgba(
        tif: *mut Tiff,
        width: u32,
        height: u32,
        raster: *mut u32,
        premultiplied: *mut c_int,
        message: *mut Message,
    ) -> c_int;
    fn TIFFClose(tif: *mut Tiff);
}

/// An open handle with the memory its callbacks point at. The source and message are heap
/// allocations held as raw pointers (libtiff keeps both and writes the message), freed after
/// `TIFFClose`.
struct File<'a> {
    tif: *mut Tiff,
    source: *mut Source,
    message: *mut Message,
    _bytes: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> File<'a> {
    fn open(bytes: &'a [u8], limits: Limits) -> Result<Self, Error> {
        let source = Box::into_raw(Box::new(Source {
            data: bytes.as_ptr(),
            len: bytes.len() as u64,
            pos: 0,
        }));
        let message = Box::into_raw(Box::new(Message { text: [0; 1024] }));
        // One allocation libtiff makes for itself (a strip, a tile, a table): never more than
        // the largest decoded image the limits allow, at 8 bytes a pixel (and at least 16 MiB,
        // for its directory and tables).
        let max_alloc = limits.max_pixels.saturating_mul(8).max(16 << 20);
        let max_alloc = isize::try_from(max_alloc).unwrap_or(isize::MAX);
        // SAFETY: `source` points at `bytes`, which outlive the handle (the lifetime 'a), and
        // the shim only reads `len` bytes from `data`; `source` and `message` are live heap
        // allocations that the returned `File` frees only after `TIFFClose`.
        let tif = unsafe { gallery_tiff_open(source, max_alloc, message) };
        let file = Self {
            tif,
            source,
            message,
            _bytes: std::marker::PhantomData,
        };
        if tif.is_null() {
            return Err(Error::Open(file.reason("libtiff can't open the file")));
        }
        Ok(file)
    }

    /// The first error libtiff reported on this handle, or `fallback`.
    fn reason(&self, fallback: &str) -> String {
        // SAFETY: `message` is live until drop, and no C call is running (calls take `&mut
        // self`).
        unsafe { (*self.message).take(fallback) }
    }

    fn header(&mut self) -> Result<(u32, u32, u16), Error> {
        let (mut width, mut height, mut orientation) = (0u32, 0u32, 1u16);
        // SAFETY: `tif` is a live handle; the out-pointers are to locals of the types the
        // shim's TIFFGetField calls write (uint32 width and length, uint16 orientation).
        let ok =
            unsafe { gallery_tiff_header(self.tif, &mut width, &mut height, &mut orientation) };
        if ok == 0 {
            return Err(Error::Open(
                self.reason("the first directory has no image size"),
            ));
        }
        Ok((width, height, orientation))
    }

    fn icc(&mut self) -> Option<Vec<u8>> {
        let mut len = 0u32;
        let mut data: *const c_void = std::ptr::null();
        // SAFETY: `tif` is live; TIFFGetField(ICCPROFILE) writes a uint32 count and a pointer.
        let ok = unsafe { gallery_tiff_icc(self.tif, &mut len, &mut data) };
        if ok == 0 || data.is_null() || len == 0 {
            return None;
        }
        // SAFETY: libtiff's copy of the tag holds `len` bytes at `data` and lives until the
        // handle closes, after this copy is made.
        let profile = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) };
        Some(profile.to_vec())
    }

    fn rgba_ok(&mut self) -> Result<(), Error> {
        // SAFETY: `tif` and `message` are live.
        let ok = unsafe { gallery_tiff_rgba_ok(self.tif, self.message) };
        if ok == 0 {
            return Err(Error::Unsupported(
                self.reason("libtiff can't convert this layout to RGBA"),
            ));
        }
        Ok(())
    }

    /// The raster, and whether its alpha is premultiplied.
    fn read_rgba(&mut self, width: u32, height: u32) -> Result<(Vec<u32>, bool), Error> {
        let mut raster = vec![0u32; width as usize * height as usize];
        let mut premultiplied: c_int = 1;
        // SAFETY: `raster` holds exactly width x height words, the size the shim passes to
        // TIFFRGBAImageGet, which writes no more than that; `width` and `height` are the
        // directory's own, read by `header`; `premultiplied` is a local int the shim writes.
        let ok = unsafe {
            gallery_tiff_read_rgba(
                self.tif,
                width,
                height,
                raster.as_mut_ptr(),
                &mut premultiplied,
                self.message,
            )
        };
        match ok {
            1 => Ok((raster, premultiplied != 0)),
            -1 => Err(Error::Unsupported(
                self.reason("libtiff can't convert this layout to RGBA"),
            )),
            _ => Err(Error::Corrupt(
                self.reason("libtiff could not decode the pixel data"),
            )),
        }
    }
}

impl Drop for File<'_> {
    fn drop(&mut self) {
        // SAFETY: `tif`, when not null, came from a successful open and is closed once,
        // here; after it, libtiff holds no pointer to `source` or `message`, which came from
        // `Box::into_raw` in `open` and are freed once, here.
        unsafe {
            if !self.tif.is_null() {
                TIFFClose(self.tif);
            }
            drop(Box::from_raw(self.source));
            drop(Box::from_raw(self.message));
        }
    }
}

#[cfg(test)]
mod tests;
