//! A JPEG marker walk, before decoding: the `image` crate decodes a truncated JPEG as if it
//! were whole (the missing part comes out grey), so completeness is checked here. The walk
//! follows segment lengths and skips entropy-coded data the way a decoder does (`FF 00` is a
//! stuffed byte, `FF D0`-`FF D7` are restart markers, and like decoders it steps over `FF xx`
//! pairs that are no marker at all), so bytes inside EXIF thumbnails or ICC profiles can't be
//! mistaken for markers. Also reports coding processes we can't decode.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegProblem {
    /// The data ends before the end-of-image marker.
    Truncated,
    /// Lossless or arithmetic-coded JPEG: valid, but not decodable here.
    UnsupportedCoding(u8),
    /// Not a JPEG marker structure at all.
    Malformed,
    /// More scans than any encoder writes: a known way to make progressive decoding crawl.
    TooManyScans,
}

/// Progressive encoders write about 10 scans; libjpeg-turbo's own tools refuse above 500.
pub const MAX_SCANS: usize = 500;

/// Walks the markers of a JPEG from SOI to EOI.
pub fn check(bytes: &[u8]) -> Result<(), JpegProblem> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(JpegProblem::Malformed);
    }
    let mut i = 2;
    let mut seen_scan = false;
    let mut scans = 0usize;
    loop {
        // Find the next marker, allowing fill bytes (FF FF ...).
        if i >= bytes.len() {
            return Err(JpegProblem::Truncated);
        }
        if bytes[i] != 0xFF {
            // Junk between segments: decoders skip it with a warning, so do we.
            match bytes[i..].iter().position(|&b| b == 0xFF) {
                Some(p) => i += p,
                None if seen_scan => return Err(JpegProblem::Truncated),
                None => return Err(JpegProblem::Malformed),
            }
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else {
            return Err(JpegProblem::Truncated);
        };
        i += 1;
        match marker {
            0xD9 => {
                return if seen_scan {
                    Ok(())
                } else {
                    Err(JpegProblem::Truncated)
                };
            }
            0xD0..=0xD7 | 0x01 => continue, // no length
            _ => {}
        }
        let Some(len) = bytes
            .get(i..i + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return Err(JpegProblem::Truncated);
        };
        if len < 2 {
            return Err(JpegProblem::Malformed);
        }
        // SOF3 (lossless), SOF7/SOF11/SOF15 (lossless variants), SOF9-SOF11/SOF13-SOF15
        // (arithmetic coding).
        if matches!(marker, 0xC3 | 0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) {
            return Err(JpegProblem::UnsupportedCoding(marker));
        }
        i += len;
        if i > bytes.len() {
            return Err(JpegProblem::Truncated);
        }
        if marker == 0xDA {
            seen_scan = true;
            scans += 1;
            if scans > MAX_SCANS {
                return Err(JpegProblem::TooManyScans);
            }
            i = skip_entropy_data(bytes, i)?;
        }
    }
}

/// Where the entropy-coded data that starts at `i` ends: at the next marker that is not a
/// stuffed byte or RSTn (the walk goes on from there).
fn skip_entropy_data(bytes: &[u8], mut i: usize) -> Result<usize, JpegProblem> {
    loop {
        let Some(pos) = bytes[i..].iter().position(|&b| b == 0xFF) else {
            return Err(JpegProblem::Truncated);
        };
        i += pos;
        match bytes.get(i + 1) {
            None => return Err(JpegProblem::Truncated),
            // A marker that can follow a scan: the walk goes on from it.
            Some(0xC0..=0xCF | 0xD9..=0xDF | 0xE0..=0xEF | 0xFE) => return Ok(i),
            // Fill byte: the marker (if any) comes after it.
            Some(0xFF) => i += 1,
            // Stuffed zero, restart marker, or a stray byte decoders skip as corrupt entropy
            // data (seen in real camera files): still inside the scan.
            Some(_) => i += 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, progressive_like_noise: bool) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let n = if progressive_like_noise {
                (x * 7919 + y * 104_729) % 251
            } else {
                0
            } as u8;
            image::Rgb([(x % 256) as u8 ^ n, (y % 256) as u8, n])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn whole_jpegs_pass_and_cut_ones_are_truncated() {
        let whole = jpeg(300, 200, true);
        assert_eq!(check(&whole), Ok(()));
        for cut in [whole.len() - 2, whole.len() * 2 / 3, 700, 200, 3] {
            assert_eq!(
                check(&whole[..cut]),
                Err(JpegProblem::Truncated),
                "cut at {cut}"
            );
        }
        // Junk between two segments is skipped, as decoders do.
        let sos = whole.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let mut junk = whole[..sos].to_vec();
        junk.extend_from_slice(b"junk");
        junk.extend_from_slice(&whole[sos..]);
        assert_eq!(check(&junk), Ok(()));
        // Data after the end-of-image marker (camera padding, MPO) is fine.
        let mut padded = whole.clone();
        padded.extend_from_slice(&[0u8; 100]);
        assert_eq!(check(&padded), Ok(()));
        assert_eq!(check(b"not a jpeg"), Err(JpegProblem::Malformed));
    }

    #[test]
    fn lossless_coding_is_reported() {
        let mut j = jpeg(16, 16, false);
        // Turn the baseline SOF0 into SOF3.
        let sof = j.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        j[sof + 1] = 0xC3;
        assert_eq!(check(&j), Err(JpegProblem::UnsupportedCoding(0xC3)));
    }
}
