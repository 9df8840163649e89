//! Reading the log: an image's or a project's events from a sequence on, either up to what the
//! stream holds now ([`read_until_now`], [`until_now`]) or following live ([`follow`]).
//!
//! [`read_until_now`] (an image's history: the processor reads one per job, the api one per
//! guarded append it retries) uses batched direct gets: one request, answered by the stream
//! itself with every matching message and an end-of-batch marker, and nothing left on the
//! server. The others use ephemeral ordered consumers, which the server removes some seconds
//! after their last use: at a hundred history reads a second those piled up to the server's
//! limit of consumers (measured: 1,000 live ones, then "maximum consumers limit reached" and
//! jobs retried seconds later), which is why short reads don't use them.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::{Stream, StreamExt, TryStreamExt};
use gallery_schema::Event;
use gallery_schema::subjects::STREAM;
use gallery_schema::wire::DecodeError;

/// The stream's first and last sequence now (both 0 while it is empty): where a rebuild, a
/// backup, a snapshot restore or a lag reading starts from. The one place that asks.
pub async fn stream_bounds(js: &jetstream::Context) -> Result<(u64, u64), StreamStateError> {
    let mut stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| StreamStateError(e.to_string()))?;
    bounds_of(&mut stream).await
}

/// [`stream_bounds`] of a stream handle the caller also needs for something else.
pub async fn bounds_of(
    stream: &mut jetstream::stream::Stream,
) -> Result<(u64, u64), StreamStateError> {
    let state = &stream
        .info()
        .await
        .map_err(|e| StreamStateError(e.to_string()))?
        .state;
    Ok((state.first_sequence, state.last_sequence))
}

/// The stream's last sequence now (0 while it is empty).
pub async fn last_seq(js: &jetstream::Context) -> Result<u64, StreamStateError> {
    Ok(stream_bounds(js).await?.1)
}

/// The stream's state could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the stream's state: {0}")]
pub struct StreamStateError(pub String);

/// An event with its stream sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("getting stream: {0}")]
    Stream(#[from] jetstream::context::GetStreamError),
    #[error("creating reader: {0}")]
    Consumer(#[from] jetstream::stream::ConsumerError),
    #[error("reading: {0}")]
    Messages(String),
    /// A message in the stream is not a valid event; carries its sequence so readers can skip it.
    #[error("undecodable event at seq {seq}: {source}")]
    Decode { seq: u64, source: DecodeError },
    /// An event of a kind this build doesn't know, on a subject of ours: written by a newer
    /// version. Readers that fold must stop here rather than skip it (docs/ARCHITECTURE.md §2).
    #[error("event at seq {seq} is of kind {kind:?}, unknown to this version: {source}")]
    UnknownKind {
        seq: u64,
        kind: String,
        source: DecodeError,
    },
    #[error("timed out reading the log")]
    Timeout,
}

fn ordered_config(filter: String, start_seq: u64) -> consumer::pull::OrderedConfig {
    consumer::pull::OrderedConfig {
        filter_subject: filter,
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start_seq.max(1),
        },
        ..Default::default()
    }
}

fn to_stored(msg: &jetstream::Message) -> Result<StoredEvent, ReadError> {
    let seq = msg
        .info()
        .map_err(|e| ReadError::Messages(e.to_string()))?
        .stream_sequence;
    decode_stored(seq, &msg.subject, &msg.payload)
}

/// The kind token of `images.<p>.<i>.<kind>` when the payload failed to decode because this
/// build doesn't know it: the subject's kind is not ours and the envelope had no kind we know
/// (protobuf skips an unknown `oneof` variant), or a version name is new.
pub fn unknown_kind(subject: &str, err: &DecodeError) -> Option<String> {
    let (_, _, kind) = gallery_schema::subjects::subject_tokens(subject)?;
    match err {
        DecodeError::MissingKind if gallery_schema::EventKind::parse(kind).is_none() => {
            Some(kind.to_owned())
        }
        DecodeError::UnknownVersion(_) => Some(kind.to_owned()),
        _ => None,
    }
}

/// Every event matching `filter` from `start_seq` (inclusive) to the end of the stream as of
/// the call. Meant for small histories (one image: a handful of events); read with batched
/// direct gets, so no consumer is created.
pub async fn read_until_now(
    js: &jetstream::Context,
    filter: String,
    start_seq: u64,
    timeout: Duration,
) -> Result<Vec<StoredEvent>, ReadError> {
    let collect = async {
        let mut out = Vec::new();
        let mut from = start_seq.max(1);
        loop {
            let (events, more) = direct_batch(js, &filter, from).await?;
            for item in events {
                match item {
                    Ok(stored) => {
                        from = stored.seq + 1;
                        out.push(stored);
                    }
                    Err(ReadError::Decode { seq, source }) => {
                        from = seq + 1;
                        tracing::warn!(seq, %source, "skipping undecodable event");
                    }
                    // A newer version's event in one image's history: this build can't know
                    // what it means for the image (nor guard an append after it), so it doesn't
                    // act on it.
                    Err(other) => return Err(other),
                }
            }
            if !more {
                return Ok(out);
            }
        }
    };
    tokio::time::timeout(timeout, collect)
        .await
        .map_err(|_| ReadError::Timeout)?
}

/// Events one batched direct get answers with (the server also stops at its max pending
/// bytes; the end-of-batch marker then says more are pending).
const DIRECT_BATCH: usize = 256;

/// One batched direct get (ADR-31): up to [`DIRECT_BATCH`] messages matching `filter` from
/// `from` on, each decoded (or the decode error with its sequence), and whether more matching
/// messages remain after them.
async fn direct_batch(
    js: &jetstream::Context,
    filter: &str,
    from: u64,
) -> Result<(Vec<Result<StoredEvent, ReadError>>, bool), ReadError> {
    let client = js.client();
    let failed =
        |what: &str, e: &dyn std::fmt::Display| ReadError::Messages(format!("{what}: {e}"));
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| failed("subscribing to the reply inbox", &e))?;
    let request = serde_json::json!({ "seq": from, "next_by_subj": filter, "batch": DIRECT_BATCH });
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{STREAM}"),
            inbox,
            request.to_string().into(),
        )
        .await
        .map_err(|e| failed("asking for the history", &e))?;
    let mut out = Vec::new();
    while let Some(msg) = replies.next().await {
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        match msg.status.map(|s| s.as_u16()) {
            None => {
                let seq = header("Nats-Sequence")
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| {
                        ReadError::Messages("a direct get reply without its sequence".into())
                    })?;
                let subject = header("Nats-Subject").unwrap_or_default();
                out.push(decode_stored(seq, &subject, &msg.payload));
            }
            // End of batch: how many matching messages are left after it.
            Some(204) => {
                let pending = header("Nats-Num-Pending")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                let more = pending > 0 && !out.is_empty();
                return Ok((out, more));
            }
            // Nothing matches from `from` on.
            Some(404) => return Ok((out, false)),
            Some(other) => {
                let why = msg.description.clone().unwrap_or_default();
                return Err(ReadError::Messages(format!(
                    "direct get answered {other} {why}"
                )));
            }
        }
    }
    Err(ReadError::Messages("the reply inbox closed".into()))
}

fn decode_stored(seq: u64, subject: &str, payload: &[u8]) -> Result<StoredEvent, ReadError> {
    let event = Event::decode_checked(subject, payload).map_err(|source| {
        match unknown_kind(subject, &source) {
            Some(kind) => ReadError::UnknownKind { seq, kind, source },
            None => ReadError::Decode { seq, source },
        }
    })?;
    Ok(StoredEvent { seq, event })
}

/// An ephemeral ordered consumer's messages from `start_seq`, and how many were pending when
/// it was created.
async fn ordered_messages(
    js: &jetstream::Context,
    config: consumer::pull::OrderedConfig,
) -> Result<(u64, consumer::pull::Ordered), ReadError> {
    let stream = js.get_stream(STREAM).await?;
    let consumer = stream.create_consumer(config).await?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| ReadError::Messages(e.to_string()))?;
    Ok((pending, messages))
}

/// Like [`read_until_now`], as a stream: ends after the last event that was in the stream when
/// the read started, so a long replay holds one event at a time.
pub async fn until_now(
    js: &jetstream::Context,
    filter: String,
    start_seq: u64,
) -> Result<impl Stream<Item = Result<StoredEvent, ReadError>> + Send + 'static, ReadError> {
    let (pending, messages) = ordered_messages(js, ordered_config(filter, start_seq)).await?;
    let messages = (pending > 0).then_some(messages);
    let state = (messages, false);
    Ok(futures::stream::unfold(
        state,
        |(messages, done)| async move {
            let mut messages = messages?;
            if done {
                return None;
            }
            let msg = match messages.next().await? {
                Ok(msg) => msg,
                Err(e) => return Some((Err(ReadError::Messages(e.to_string())), (None, true))),
            };
            let last = msg.info().map(|i| i.pending == 0).unwrap_or(true);
            Some((to_stored(&msg), (Some(messages), last)))
        },
    ))
}

/// Events matching `filter` from `start_seq` on, following new appends for as long as the
/// returned stream is polled. Undecodable messages come through as [`ReadError::Decode`].
/// How long one pull of [`follow`] waits; its idle heartbeat is half of it.
const FOLLOW_PULL: Duration = Duration::from_secs(4);

pub async fn follow(
    js: &jetstream::Context,
    filter: String,
    start_seq: u64,
) -> Result<impl Stream<Item = Result<StoredEvent, ReadError>> + Send + 'static, ReadError> {
    // Short pulls, so a server that restarted or a leader that moved is noticed in seconds
    // (two missed heartbeats, each half a pull) rather than the client's default of 30 s; the
    // consumer is then recreated from the next sequence.
    let config = consumer::pull::OrderedConfig {
        max_expires: FOLLOW_PULL,
        ..ordered_config(filter, start_seq)
    };
    let (_, messages) = ordered_messages(js, config).await?;
    Ok(messages
        .map_err(|e| ReadError::Messages(e.to_string()))
        .map(|msg| msg.and_then(|m| to_stored(&m))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_kind_is_told_apart_from_a_damaged_event() {
        let s = "images.p.019a0000-0000-7000-8000-000000000001";
        assert_eq!(
            unknown_kind(&format!("{s}.archived"), &DecodeError::MissingKind),
            Some("archived".to_owned())
        );
        // A known kind with no body is damage, not a newer version.
        assert_eq!(
            unknown_kind(&format!("{s}.uploaded"), &DecodeError::MissingKind),
            None
        );
        assert_eq!(
            unknown_kind(
                &format!("{s}.version_rendered"),
                &DecodeError::UnknownVersion("d4000".into())
            ),
            Some("version_rendered".to_owned())
        );
        assert_eq!(
            unknown_kind("other.subject", &DecodeError::MissingKind),
            None
        );
    }
}
