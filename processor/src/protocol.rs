//! The render worker's wire format: one request (limits and the original's bytes) and one
//! response (the versions, or a render error) per job, length-prefixed over the worker's stdin
//! and stdout. Pure framing over `Read`/`Write`; the process handling is in [`crate::pool`] and
//! the render worker's loop in [`serve`].
//!
//! ```text
//! request:  "GRW1" max_pixels:u64 max_side:u32 len:u64 bytes
//! response: 0 upright_w:u32 upright_h:u32 n:u32 { name ct ext:str16 w:u32 h:u32 len:u64 data }*n
//!             thumbhash:bytes16
//!         | 1 code:str16 message:str32
//! ```

use std::io::{self, Read, Write};

use gallery_schema::{ErrorCode, Size, VersionName};

use crate::render::{Limits, RenderError, Rendered, RenderedVersion};

const MAGIC: &[u8; 4] = b"GRW1";

fn put_u32(w: &mut impl Write, v: u32) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

fn put_u64(w: &mut impl Write, v: u64) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

fn put_str16(w: &mut impl Write, s: &str) -> io::Result<()> {
    let len = u16::try_from(s.len()).map_err(|_| invalid("string too long"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn get_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn get_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn get_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn get_bytes(r: &mut impl Read, len: u64, max: u64) -> io::Result<Vec<u8>> {
    if len > max {
        return Err(invalid("frame larger than allowed"));
    }
    // Not zeroed first: megabytes per job.
    let mut out = Vec::with_capacity(len as usize);
    r.take(len).read_to_end(&mut out)?;
    if out.len() as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "frame cut short",
        ));
    }
    Ok(out)
}

/// Pipes of 1 MiB instead of 64 KiB: a 4 MB photo crosses in a few writes, not seventy.
pub fn widen_pipe(fd: impl std::os::fd::AsFd) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

fn get_string(r: &mut impl Read, len: u64) -> io::Result<String> {
    String::from_utf8(get_bytes(r, len, 1 << 20)?).map_err(|_| invalid("not UTF-8"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The largest original a request may carry (the upload limit is far below it).
const MAX_INPUT: u64 = 1 << 32;
/// The largest version a response may carry: the biggest box (2500x2500) as uncompressed RGBA
/// is 25 MB, so a worker claiming more is lying, and the processor (which holds the
/// credentials) won't allocate for it.
const MAX_VERSION: u64 = 64 << 20;

pub fn write_request(w: &mut impl Write, limits: Limits, bytes: &[u8]) -> io::Result<()> {
    w.write_all(MAGIC)?;
    put_u64(w, limits.max_pixels)?;
    put_u32(w, limits.max_side)?;
    put_u64(w, bytes.len() as u64)?;
    w.write_all(bytes)?;
    w.flush()
}

/// `None` at a clean end of input (the processor closed the pipe).
pub fn read_request(r: &mut impl Read) -> io::Result<Option<(Limits, Vec<u8>)>> {
    let mut magic = [0; 4];
    match r.read_exact(&mut magic) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if &magic != MAGIC {
        return Err(invalid("not a render request"));
    }
    let limits = Limits {
        max_pixels: get_u64(r)?,
        max_side: get_u32(r)?,
    };
    let len = get_u64(r)?;
    Ok(Some((limits, get_bytes(r, len, MAX_INPUT)?)))
}

pub fn write_response(
    w: &mut impl Write,
    result: &Result<Rendered, RenderError>,
) -> io::Result<()> {
    match result {
        Ok(rendered) => {
            w.write_all(&[0])?;
            put_u32(w, rendered.upright.width)?;
            put_u32(w, rendered.upright.height)?;
            put_u32(w, rendered.versions.len() as u32)?;
            for v in &rendered.versions {
                put_str16(w, v.version.as_str())?;
                put_str16(w, v.content_type)?;
                put_str16(w, v.extension)?;
                put_u32(w, v.size.width)?;
                put_u32(w, v.size.height)?;
                put_u64(w, v.data.len() as u64)?;
                w.write_all(&v.data)?;
            }
            let len = u16::try_from(rendered.thumbhash.len())
                .map_err(|_| invalid("thumbhash too long"))?;
            w.write_all(&len.to_le_bytes())?;
            w.write_all(&rendered.thumbhash)?;
        }
        Err(e) => {
            w.write_all(&[1])?;
            put_str16(w, e.code.as_str())?;
            let message = e.message.as_bytes();
            put_u32(w, message.len() as u32)?;
            w.write_all(message)?;
        }
    }
    w.flush()
}

/// The content types and extensions the pipeline writes, as the `'static` strings
/// [`RenderedVersion`] holds.
fn known_format(content_type: &str, extension: &str) -> Option<(&'static str, &'static str)> {
    [("image/jpeg", "jpg"), ("image/png", "png")]
        .into_iter()
        .find(|(ct, ext)| *ct == content_type && *ext == extension)
}

pub fn read_response(r: &mut impl Read) -> io::Result<Result<Rendered, RenderError>> {
    let mut status = [0; 1];
    r.read_exact(&mut status)?;
    match status[0] {
        0 => {
            let upright = Size {
                width: get_u32(r)?,
                height: get_u32(r)?,
            };
            let n = get_u32(r)?;
            if n as usize > VersionName::CASCADE.len() {
                return Err(invalid("too many versions"));
            }
            let mut versions = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let len = u64::from(get_u16(r)?);
                let name = get_string(r, len)?;
                let len = u64::from(get_u16(r)?);
                let ct = get_string(r, len)?;
                let len = u64::from(get_u16(r)?);
                let ext = get_string(r, len)?;
                let version = VersionName::parse(&name).ok_or_else(|| invalid("version name"))?;
                let (content_type, extension) =
                    known_format(&ct, &ext).ok_or_else(|| invalid("content type"))?;
                let size = Size {
                    width: get_u32(r)?,
                    height: get_u32(r)?,
                };
                let len = get_u64(r)?;
                let data = get_bytes(r, len, MAX_VERSION)?;
                versions.push(RenderedVersion {
                    version,
                    size,
                    data,
                    content_type,
                    extension,
                });
            }
            let len = u64::from(get_u16(r)?);
            let thumbhash = get_bytes(r, len, 1024)?;
            Ok(Ok(Rendered {
                upright,
                versions,
                thumbhash,
            }))
        }
        1 => {
            let len = u64::from(get_u16(r)?);
            let code = ErrorCode::parse_lenient(&get_string(r, len)?);
            let len = u64::from(get_u32(r)?);
            let message = get_string(r, len)?;
            Ok(Err(RenderError { code, message }))
        }
        _ => Err(invalid("response status")),
    }
}

/// Test-only poison markers, honoured only by debug builds: a file containing one of these in
/// its first 64 KiB makes the worker abort or hang, as a hostile file could in a C decoder.
pub const POISON_CRASH: &[u8] = b"GALLERY-TEST-POISON-CRASH";
pub const POISON_HANG: &[u8] = b"GALLERY-TEST-POISON-HANG";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The render worker's loop: read a request, render, answer, until the input ends. A panic in
/// the pipeline is answered as `corrupt_image` (the worker stays usable); an abort ends the
/// process, which the pool sees as a crash.
pub fn serve(input: &mut impl Read, output: &mut impl Write) -> io::Result<()> {
    while let Some((limits, bytes)) = read_request(input)? {
        if cfg!(debug_assertions) {
            let head = &bytes[..bytes.len().min(64 * 1024)];
            if contains(head, POISON_CRASH) {
                std::process::abort();
            }
            if contains(head, POISON_HANG) {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
        }
        let result = std::panic::catch_unwind(|| crate::render::render(&bytes, limits))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                Err(RenderError {
                    code: ErrorCode::CorruptImage,
                    message: format!("the decoder failed: {what}"),
                })
            });
        write_response(output, &result)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let limits = Limits {
            max_pixels: 123,
            max_side: 45,
        };
        let mut wire = Vec::new();
        write_request(&mut wire, limits, b"abc").unwrap();
        let mut r = wire.as_slice();
        let (l, bytes) = read_request(&mut r).unwrap().unwrap();
        assert_eq!(
            (l.max_pixels, l.max_side, bytes.as_slice()),
            (123, 45, &b"abc"[..])
        );
        assert!(read_request(&mut r).unwrap().is_none(), "clean end");

        let rendered = Rendered {
            upright: Size {
                width: 10,
                height: 20,
            },
            versions: vec![RenderedVersion {
                version: VersionName::Thumb,
                size: Size {
                    width: 5,
                    height: 10,
                },
                data: vec![1, 2, 3],
                content_type: "image/png",
                extension: "png",
            }],
            thumbhash: vec![9, 8, 7],
        };
        let mut wire = Vec::new();
        write_response(&mut wire, &Ok(rendered)).unwrap();
        let back = read_response(&mut wire.as_slice()).unwrap().unwrap();
        assert_eq!(back.upright.height, 20);
        assert_eq!(back.versions[0].version, VersionName::Thumb);
        assert_eq!(back.versions[0].data, [1, 2, 3]);
        assert_eq!(back.versions[0].content_type, "image/png");
        assert_eq!(back.thumbhash, [9, 8, 7]);

        let err = RenderError {
            code: ErrorCode::ImageTooLarge,
            message: "big".into(),
        };
        let mut wire = Vec::new();
        write_response(&mut wire, &Err(err.clone())).unwrap();
        assert_eq!(
            read_response(&mut wire.as_slice()).unwrap().unwrap_err(),
            err
        );
    }

    #[test]
    fn a_cut_response_is_an_error_not_a_result() {
        let mut wire = Vec::new();
        write_response(
            &mut wire,
            &Err(RenderError {
                code: ErrorCode::CorruptImage,
                message: "x".into(),
            }),
        )
        .unwrap();
        wire.truncate(wire.len() - 1);
        assert!(read_response(&mut wire.as_slice()).is_err());
        assert!(read_request(&mut &b"GRW"[..]).unwrap().is_none());
        assert!(read_request(&mut &b"NOPE...."[..]).is_err());
    }
}
