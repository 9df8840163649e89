//! Backup and restore of the event log. The log is the source of truth; everything else (read
//! models, versions) is derived from it, so a copy of the stream is a copy of the service.
//!
//! `gallery backup` reads the stream from a sequence on (1, or one past the last backup for an
//! incremental one) and appends every message as it is stored (sequence, subject, `Nats-Msg-Id`,
//! payload) to a file. `gallery restore` publishes a backup into an empty stream in order, each
//! append guarded by `Nats-Expected-Last-Sequence`, so the restored stream has exactly the
//! original sequences (the read model and WebSocket `since` refer to them) or the restore stops
//! with an error. Framing (pure, over `Read`/`Write`):
//!
//! ```text
//! file:   "GALLERY-LOG-BACKUP 1\n" record*
//! record: seq:u64 subject:str16 msg_id:str16 payload_len:u32 payload
//! ```

use std::io::{self, Read, Write};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use gallery_schema::subjects::{HEADER_MSG_ID, STREAM, STREAM_SUBJECTS};

pub const MAGIC: &[u8] = b"GALLERY-LOG-BACKUP 1\n";

/// NATS's own maximum payload is 64 MiB; events are a few hundred bytes.
const MAX_PAYLOAD: u64 = 64 << 20;

/// The last sequence a backup file holds (0 for an empty or header-only file), read through it.
pub fn last_seq_in(r: &mut impl Read) -> io::Result<u64> {
    read_header(r)?;
    let mut last = 0;
    while let Some(record) = read_record(r)? {
        last = record.seq;
    }
    Ok(last)
}

/// One stored message of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub subject: String,
    pub msg_id: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup file: {0}")]
    Io(#[from] io::Error),
    #[error("reading the stream: {0}")]
    Read(String),
    #[error("restoring seq {seq}: {message}")]
    Restore { seq: u64, message: String },
}

pub fn write_record(w: &mut impl Write, r: &Record) -> io::Result<()> {
    w.write_all(&r.seq.to_le_bytes())?;
    for s in [&r.subject, &r.msg_id] {
        let len = u16::try_from(s.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string too long"))?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(s.as_bytes())?;
    }
    let len = u32::try_from(r.payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "payload too long"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&r.payload)
}

/// The next record, `None` at a clean end of the file.
pub fn read_record(r: &mut impl Read) -> io::Result<Option<Record>> {
    let mut seq = [0; 8];
    match r.read_exact(&mut seq) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut strings = Vec::with_capacity(2);
    for _ in 0..2 {
        let mut len = [0; 2];
        r.read_exact(&mut len)?;
        let mut s = vec![0; u16::from_le_bytes(len) as usize];
        r.read_exact(&mut s)?;
        strings.push(
            String::from_utf8(s)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))?,
        );
    }
    let mut len = [0; 4];
    r.read_exact(&mut len)?;
    let len = u64::from(u32::from_le_bytes(len));
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "record larger than a message",
        ));
    }
    let mut payload = Vec::with_capacity(len as usize);
    r.take(len).read_to_end(&mut payload)?;
    if payload.len() as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "record cut short",
        ));
    }
    let msg_id = strings.pop().expect("two strings");
    let subject = strings.pop().expect("two strings");
    Ok(Some(Record {
        seq: u64::from_le_bytes(seq),
        subject,
        msg_id,
        payload,
    }))
}

/// Checks the file's header.
pub fn read_header(r: &mut impl Read) -> io::Result<()> {
    let mut magic = vec![0; MAGIC.len()];
    r.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a gallery log backup",
        ));
    }
    Ok(())
}

/// What a backup or restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub records: u64,
    pub last_seq: u64,
    pub payload_bytes: u64,
}

/// Writes every message from `from_seq` to the stream's last sequence as of the call to `out`
/// (which must already hold the header, or be empty to get one).
pub async fn backup(
    js: &jetstream::Context,
    out: &mut impl Write,
    from_seq: u64,
    write_header: bool,
) -> Result<Stats, BackupError> {
    if write_header {
        out.write_all(MAGIC)?;
    }
    let mut stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| BackupError::Read(e.to_string()))?;
    let (_, last) = crate::read::bounds_of(&mut stream)
        .await
        .map_err(|e| BackupError::Read(e.0))?;
    let mut stats = Stats {
        last_seq: from_seq.saturating_sub(1),
        ..Stats::default()
    };
    if last < from_seq.max(1) {
        return Ok(stats);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: STREAM_SUBJECTS.to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from_seq.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| BackupError::Read(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| BackupError::Read(e.to_string()))?;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(30), messages.next())
        .await
        .map_err(|_| BackupError::Read("no message within 30 s".into()))?
    {
        let msg = msg.map_err(|e| BackupError::Read(e.to_string()))?;
        let seq = msg
            .info()
            .map_err(|e| BackupError::Read(e.to_string()))?
            .stream_sequence;
        let msg_id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_MSG_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        write_record(
            out,
            &Record {
                seq,
                subject: msg.subject.to_string(),
                msg_id,
                payload: msg.payload.to_vec(),
            },
        )?;
        stats.records += 1;
        stats.last_seq = seq;
        stats.payload_bytes += msg.payload.len() as u64;
        if seq >= last {
            break;
        }
    }
    out.flush()?;
    Ok(stats)
}

/// Publishes a backup into the stream at the original sequences. Records the stream already
/// holds (a restore that was interrupted, then run again) are skipped; the first one after
/// them must continue the stream exactly.
pub async fn restore(js: &jetstream::Context, input: &mut impl Read) -> Result<Stats, BackupError> {
    read_header(input)?;
    let have = crate::read::last_seq(js)
        .await
        .map_err(|e| BackupError::Read(e.0))?;
    let mut stats = Stats::default();
    while let Some(record) = read_record(input)? {
        if record.seq == 0 {
            return Err(BackupError::Restore {
                seq: 0,
                message: "a record without a sequence: not a backup of ours".into(),
            });
        }
        if record.seq <= have {
            continue;
        }
        let mut headers = HeaderMap::new();
        if !record.msg_id.is_empty() {
            headers.insert(HEADER_MSG_ID, record.msg_id.as_str());
        }
        headers.insert(
            "Nats-Expected-Last-Sequence",
            (record.seq - 1).to_string().as_str(),
        );
        let ack = js
            .publish_with_headers(
                record.subject.clone(),
                headers,
                record.payload.clone().into(),
            )
            .await
            .map_err(|e| BackupError::Restore {
                seq: record.seq,
                message: e.to_string(),
            })?
            .await
            .map_err(|e| BackupError::Restore {
                seq: record.seq,
                message: format!(
                    "{e} (is the stream empty, or does it end at {}?)",
                    record.seq - 1
                ),
            })?;
        if ack.sequence != record.seq {
            return Err(BackupError::Restore {
                seq: record.seq,
                message: format!("landed at {}", ack.sequence),
            });
        }
        stats.records += 1;
        stats.last_seq = record.seq;
        stats.payload_bytes += record.payload.len() as u64;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_cut_file_is_an_error() {
        let r = Record {
            seq: 42,
            subject: "images.p.i.uploaded".into(),
            msg_id: "i:1:uploaded".into(),
            payload: vec![1, 2, 3],
        };
        let mut buf = MAGIC.to_vec();
        write_record(&mut buf, &r).unwrap();
        let mut input = buf.as_slice();
        read_header(&mut input).unwrap();
        assert_eq!(read_record(&mut input).unwrap(), Some(r));
        assert_eq!(read_record(&mut input).unwrap(), None);
        buf.pop();
        let mut input = &buf[MAGIC.len()..];
        assert!(read_record(&mut input).is_err());
        assert!(read_header(&mut &b"something else entirely"[..]).is_err());
    }
}
