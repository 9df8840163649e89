//! Read-model snapshots: every record with the stream sequence the model covers, so a new api
//! replica starts from the newest snapshot and replays only the log's tail, in time that grows
//! with the number of images rather than with the length of the log.
//!
//! The format (docs/ARCHITECTURE.md §8), zstd-compressed as a whole:
//!
//! ```text
//! "LGSNAP" 0x00 0x01                    magic and format 1
//! u32 LE n, n bytes of JSON             header: {"record_version", "last_seq", "written_at"}
//! (u32 LE n > 0, n bytes)*              each record as the store keeps it (postcard)
//! u32 LE 0, u64 LE count                end: a file cut short is refused, never half-loaded
//! ```
//!
//! A snapshot is written while the projector runs: `last_seq` is read first, then the records,
//! some of which may already hold later events. That is safe because replaying the tail skips,
//! per image, every event at or below the record's own `last_seq` (`batch.rs`).

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use gallery_schema::{ImageState, ProjectId};
use serde::{Deserialize, Serialize};

use crate::record::{RECORD_VERSION, Record};
use crate::store::{Store, StoreError};

const MAGIC: &[u8; 8] = b"LGSNAP\x00\x01";
/// Records written to the store per import batch.
const IMPORT_CHUNK: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Every event up to this stream sequence is in the snapshot.
    pub last_seq: u64,
    pub records: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    record_version: u32,
    last_seq: u64,
    written_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading or writing the snapshot: {0}")]
    Io(#[from] io::Error),
    #[error("not a read-model snapshot (or another format)")]
    NotASnapshot,
    #[error("the snapshot holds records of version {0}; this build reads {RECORD_VERSION}")]
    RecordVersion(u32),
    #[error("the snapshot is damaged: {0}")]
    Damaged(String),
}

impl Store {
    /// Writes every record and the sequence they cover to `out` (uncompressed; the caller
    /// compresses). Safe while the projector runs (module docs).
    pub fn write_snapshot(&self, out: impl Write) -> Result<SnapshotInfo, SnapshotError> {
        let mut out = io::BufWriter::with_capacity(1 << 20, out);
        // First: records may only be newer than this, never older.
        let last_seq = self.last_seq()?;
        out.write_all(MAGIC)?;
        let header = serde_json::to_vec(&Header {
            record_version: RECORD_VERSION,
            last_seq,
            written_at: Utc::now(),
        })
        .map_err(io::Error::other)?;
        write_frame(&mut out, &header)?;
        let mut records = 0u64;
        for bytes in self.raw_records() {
            let bytes = bytes?;
            if bytes.is_empty() {
                continue;
            }
            write_frame(&mut out, &bytes)?;
            records += 1;
        }
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&records.to_le_bytes())?;
        out.flush()?;
        Ok(SnapshotInfo { last_seq, records })
    }

    /// Builds a store in `dir` (which must not hold one) from a snapshot read from `input`
    /// (uncompressed). The store is complete only if this returns `Ok`: the caller builds it
    /// aside and moves it into place.
    pub fn import_snapshot(
        dir: &Path,
        input: impl Read,
    ) -> Result<(Store, SnapshotInfo), SnapshotError> {
        Self::import_in_chunks(dir, input, IMPORT_CHUNK)
    }

    fn import_in_chunks(
        dir: &Path,
        input: impl Read,
        chunk_size: usize,
    ) -> Result<(Store, SnapshotInfo), SnapshotError> {
        let mut input = io::BufReader::with_capacity(1 << 20, input);
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| SnapshotError::NotASnapshot)?;
        if &magic != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let header = read_frame(&mut input)?.ok_or(SnapshotError::NotASnapshot)?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|_| SnapshotError::NotASnapshot)?;
        if header.record_version != RECORD_VERSION {
            return Err(SnapshotError::RecordVersion(header.record_version));
        }
        let store = Store::open(dir)?;
        let mut awaiting: HashMap<ProjectId, u64> = HashMap::new();
        let mut chunk = Vec::with_capacity(chunk_size);
        let mut records = 0u64;
        loop {
            let frame = read_frame(&mut input)?;
            let done = frame.is_none();
            if let Some(bytes) = frame {
                let rec = Record::decode(&bytes)
                    .map_err(|e| SnapshotError::Damaged(format!("record {records}: {e}")))?;
                if rec.state == ImageState::Init {
                    *awaiting.entry(rec.project_id.clone()).or_default() += 1;
                }
                chunk.push((rec, bytes));
                records += 1;
            }
            if chunk.len() >= chunk_size || (done && !chunk.is_empty()) {
                store.import_records(&chunk)?;
                chunk.clear();
            }
            if done {
                break;
            }
        }
        let mut count = [0u8; 8];
        input
            .read_exact(&mut count)
            .map_err(|_| SnapshotError::Damaged("cut short".into()))?;
        if u64::from_le_bytes(count) != records {
            return Err(SnapshotError::Damaged(format!(
                "{records} records, the end says {}",
                u64::from_le_bytes(count)
            )));
        }
        if input.fill_buf()?.iter().any(|_| true) {
            return Err(SnapshotError::Damaged("bytes after the end".into()));
        }
        store.finish_import(header.last_seq, &awaiting)?;
        Ok((
            store,
            SnapshotInfo {
                last_seq: header.last_seq,
                records,
            },
        ))
    }
}

fn write_frame(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame size"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// The next frame, or `None` at the end marker.
fn read_frame(input: &mut impl Read) -> Result<Option<Vec<u8>>, SnapshotError> {
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .map_err(|_| SnapshotError::Damaged("cut short".into()))?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 {
        return Ok(None);
    }
    // Records are small; a huge length is damage, not a reason to allocate.
    if len > 64 << 20 {
        return Err(SnapshotError::Damaged(format!("a frame of {len} bytes")));
    }
    let mut bytes = vec![0u8; len];
    input
        .read_exact(&mut bytes)
        .map_err(|_| SnapshotError::Damaged("cut short".into()))?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::apply;
    use gallery_schema::{Event, EventBody, ImageId, UploadRequested, Uploaded};

    fn model(dir: &Path, images: usize) -> Store {
        let store = Store::open(dir).unwrap();
        let mut seq = 0;
        for n in 0..images {
            let project = ProjectId::parse(&format!("p{}", n % 3)).unwrap();
            let request = Event::new(
                project.clone(),
                ImageId::new_v7(),
                EventBody::UploadRequested(UploadRequested {
                    filename: format!("{n}.jpg"),
                    object_key: "k".into(),
                    content_type: "image/jpeg".into(),
                    declared_size: None,
                    link_expires_at: Utc::now(),
                    max_bytes: 10,
                    source_url: None,
                }),
            );
            seq += 1;
            let mut rec = apply(None, seq, &request).unwrap();
            if n % 2 == 0 {
                seq += 1;
                let uploaded = Event::new(
                    project,
                    request.image_id,
                    EventBody::Uploaded(Uploaded {
                        size: 5,
                        etag: "e".into(),
                        generation: 1,
                    }),
                );
                rec = apply(Some(rec), seq, &uploaded).unwrap();
            }
            store.commit(seq, Some(&rec)).unwrap();
        }
        store
    }

    #[test]
    fn a_snapshot_restores_the_same_model_indexes_and_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let original = model(&dir.path().join("a"), 2_501);
        let mut bytes = Vec::new();
        let info = original.write_snapshot(&mut bytes).unwrap();
        assert_eq!(info.records, 2_501);
        assert_eq!(info.last_seq, original.last_seq().unwrap());
        // Three chunks, the last one short.
        let (restored, read) =
            Store::import_in_chunks(&dir.path().join("b"), &bytes[..], 1_000).unwrap();
        assert_eq!(read, info);
        assert_eq!(restored.last_seq().unwrap(), info.last_seq);
        assert_eq!(restored.all().unwrap(), original.all().unwrap());
        assert_eq!(
            restored.pending().unwrap().len(),
            original.pending().unwrap().len()
        );
        for p in ["p0", "p1", "p2"] {
            let p = ProjectId::parse(p).unwrap();
            assert_eq!(
                restored.awaiting_upload(&p).unwrap(),
                original.awaiting_upload(&p).unwrap()
            );
            let ids = |s: &Store| {
                s.list(&p, None, 100, None)
                    .unwrap()
                    .records
                    .into_iter()
                    .map(|r| r.image_id)
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(&restored), ids(&original));
        }
    }

    #[test]
    fn damaged_or_foreign_snapshots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let original = model(&dir.path().join("a"), 10);
        let mut bytes = Vec::new();
        original.write_snapshot(&mut bytes).unwrap();
        let attempt = |name: &str, input: &[u8]| {
            Store::import_snapshot(&dir.path().join(name), input).map(|_| ())
        };
        assert!(matches!(
            attempt("cut", &bytes[..bytes.len() - 30]),
            Err(SnapshotError::Damaged(_))
        ));
        assert!(matches!(
            attempt("empty", b""),
            Err(SnapshotError::NotASnapshot)
        ));
        assert!(matches!(
            attempt("other", b"PK\x03\x04 not a snapshot at all"),
            Err(SnapshotError::NotASnapshot)
        ));
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"junk");
        assert!(matches!(
            attempt("longer", &longer),
            Err(SnapshotError::Damaged(_))
        ));
        // A record that isn't one.
        let mut flipped = bytes.clone();
        let first_record = 8 + 4 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        // Its first field as a varint that never ends.
        flipped[first_record + 4..first_record + 16].fill(0xFF);
        assert!(matches!(
            attempt("flipped", &flipped),
            Err(SnapshotError::Damaged(_))
        ));
    }
}
