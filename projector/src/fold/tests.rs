//! Given events, expect a record (or a fold error).

use chrono::{DateTime, Utc};
use gallery_schema::{
    ErrorCode, Event, EventBody, ImageId, ImageState, ProjectId, UploadRequested, Uploaded,
    VersionName, VersionRendered, event::Failure,
};

use super::*;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_767_225_600_000 + ms).unwrap()
}

struct Given {
    project: ProjectId,
    image: ImageId,
    events: Vec<EventBody>,
}

fn given(events: Vec<EventBody>) -> Given {
    Given {
        project: ProjectId::parse("42").unwrap(),
        image: ImageId::parse("019a0000-0000-7000-8000-000000000001").unwrap(),
        events,
    }
}

impl Given {
    /// Folds every event; the first error stops the fold.
    fn fold(&self) -> Result<Record, FoldError> {
        let mut rec = None;
        for (n, body) in self.events.iter().enumerate() {
            let event = Event {
                image_id: self.image,
                project_id: self.project.clone(),
                at: at(n as i64 * 1000),
                body: body.clone(),
            };
            rec = Some(apply(rec, n as u64 + 1, &event)?);
        }
        Ok(rec.expect("at least one event"))
    }
}

fn requested() -> EventBody {
    EventBody::UploadRequested(UploadRequested {
        filename: "cat.jpg".into(),
        object_key: "originals/42/019a0000-0000-7000-8000-000000000001".into(),
        content_type: "image/jpeg".into(),
        declared_size: None,
        link_expires_at: at(900_000),
        max_bytes: 50_000_000,
        source_url: None,
    })
}

fn uploaded(generation: u32) -> EventBody {
    EventBody::Uploaded(Uploaded {
        size: 1234,
        etag: "\"abc\"".into(),
        generation,
    })
}

fn started(generation: u32) -> EventBody {
    EventBody::ProcessingStarted {
        attempt: 1,
        generation,
    }
}

fn rendered(version: VersionName, generation: u32) -> EventBody {
    let b = version.bounds();
    EventBody::VersionRendered(VersionRendered {
        version,
        key: format!("versions/42/x/{generation}/{version}.jpg"),
        width: b.width,
        height: b.height / 2,
        bytes: 100,
        content_type: "image/jpeg".into(),
        generation,
    })
}

fn processed(generation: u32) -> EventBody {
    EventBody::Processed {
        generation,
        width: 4000,
        height: 2000,
        thumbhash: vec![0x2c, 0x18, 0x0a],
        sha256: Some([0xab; 32]),
        renditions_version: 1,
    }
}

fn failed(code: ErrorCode, generation: u32) -> EventBody {
    EventBody::Failed(Failure {
        code,
        message: "m".into(),
        retryable: false,
        generation,
    })
}

fn happy_path() -> Vec<EventBody> {
    let mut events = vec![requested(), uploaded(1), started(1)];
    events.extend(VersionName::CASCADE.map(|v| rendered(v, 1)));
    events.push(processed(1));
    events
}

#[test]
fn upload_request_creates_an_init_record() {
    let rec = given(vec![requested()]).fold().unwrap();
    assert_eq!(rec.state, ImageState::Init);
    assert_eq!(rec.filename, "cat.jpg");
    assert_eq!(rec.last_seq, 1);
    assert!(rec.versions.is_empty());
}

#[test]
fn the_whole_flow_ends_done_with_four_versions() {
    let rec = given(happy_path()).fold().unwrap();
    assert_eq!(rec.state, ImageState::Done);
    assert_eq!(rec.versions.len(), 4);
    assert_eq!(rec.last_seq, 8);
    assert_eq!((rec.width, rec.height), (Some(4000), Some(2000)));
    insta::assert_yaml_snapshot!("done_record", rec);
}

#[test]
fn each_step_sets_the_state_clients_see() {
    let expect = [
        ImageState::Init,
        ImageState::Uploaded,
        ImageState::Processing,
        ImageState::Processing,
        ImageState::Processing,
        ImageState::Processing,
        ImageState::Processing,
        ImageState::Done,
    ];
    let events = happy_path();
    for n in 1..=events.len() {
        let rec = given(events[..n].to_vec()).fold().unwrap();
        assert_eq!(rec.state, expect[n - 1], "after {n} events");
        // The WebSocket derives the state from the kind alone: both must agree.
        assert_eq!(rec.state, events[n - 1].kind().state_after());
    }
}

#[test]
fn a_corrupt_image_ends_in_error_with_its_code() {
    let rec = given(vec![
        requested(),
        uploaded(1),
        started(1),
        failed(ErrorCode::CorruptImage, 1),
    ])
    .fold()
    .unwrap();
    assert_eq!(rec.state, ImageState::Error);
    assert_eq!(rec.error.unwrap().code, ErrorCode::CorruptImage);
}

#[test]
fn an_unused_link_can_expire() {
    let rec = given(vec![requested(), failed(ErrorCode::UploadExpired, 0)])
        .fold()
        .unwrap();
    assert_eq!(rec.state, ImageState::Error);
    // ...and an expired, never uploaded image can't be reprocessed: there is nothing to render.
    let err = given(vec![
        requested(),
        failed(ErrorCode::UploadExpired, 0),
        reprocess(1),
    ])
    .fold()
    .unwrap_err();
    assert_eq!(
        err,
        FoldError::IllegalTransition {
            state: ImageState::Error,
            kind: EventKind::ReprocessRequested
        }
    );
}

fn reprocess(generation: u32) -> EventBody {
    EventBody::ReprocessRequested { generation }
}

#[test]
fn reprocess_starts_a_new_generation_and_ignores_the_old_one() {
    let mut events = happy_path();
    events.push(reprocess(2));
    let rec = given(events.clone()).fold().unwrap();
    assert_eq!((rec.state, rec.generation), (ImageState::Uploaded, 2));
    assert!(rec.error.is_none());

    events.push(rendered(VersionName::Thumb, 1));
    assert_eq!(
        given(events).fold().unwrap_err(),
        FoldError::StaleGeneration {
            kind: EventKind::VersionRendered,
            event: 1,
            current: 2
        }
    );
}

fn generations(rec: &crate::Record) -> Vec<(VersionName, u32)> {
    rec.versions
        .iter()
        .map(|(name, v)| (*name, v.generation))
        .collect()
}

#[test]
fn a_reprocess_keeps_serving_the_previous_versions_until_each_is_replaced() {
    use VersionName::*;
    let done = given(happy_path()).fold().unwrap();
    let mut events = happy_path();
    events.extend([reprocess(2), started(2)]);
    let rec = given(events.clone()).fold().unwrap();
    // Nothing rendered yet: the listing still has every version (and the size) of generation 1.
    assert_eq!(rec.state, ImageState::Processing);
    assert_eq!(rec.versions, done.versions);
    assert_eq!((rec.width, rec.height), (done.width, done.height));
    assert_eq!(rec.renditions_version, done.renditions_version);

    // Replaced one by one.
    events.push(rendered(Thumb, 2));
    let rec = given(events.clone()).fold().unwrap();
    assert_eq!(
        generations(&rec),
        [(Thumb, 2), (BigThumb, 1), (Big1920, 1), (D2500, 1)]
    );
    assert_eq!(rec.versions[&Thumb].key, "versions/42/x/2/thumb.jpg");

    // A failed reprocess keeps what it has: the image is in error, its gallery isn't empty.
    let failed_rec = given([events.clone(), vec![failed(ErrorCode::CorruptImage, 2)]].concat())
        .fold()
        .unwrap();
    assert_eq!(failed_rec.state, ImageState::Error);
    assert_eq!(failed_rec.versions, rec.versions);

    // `processed` leaves only the new generation: a name it didn't render (renditions that
    // changed) goes.
    events.extend([rendered(BigThumb, 2), processed(2)]);
    let rec = given(events).fold().unwrap();
    assert_eq!(rec.state, ImageState::Done);
    assert_eq!(generations(&rec), [(Thumb, 2), (BigThumb, 2)]);
}

fn deleted() -> EventBody {
    EventBody::Deleted {
        whole_project: false,
    }
}

#[test]
fn a_deletion_ends_any_state_in_a_tombstone_without_the_file_name() {
    let prefixes: Vec<Vec<EventBody>> = vec![
        vec![requested()],
        vec![requested(), uploaded(1)],
        vec![requested(), uploaded(1), started(1)],
        happy_path(),
        vec![
            requested(),
            uploaded(1),
            started(1),
            failed(ErrorCode::CorruptImage, 1),
        ],
    ];
    for events in prefixes {
        let before = given(events.clone()).fold().unwrap();
        let rec = given([events, vec![deleted()]].concat()).fold().unwrap();
        assert_eq!(rec.state, ImageState::Deleted);
        assert_eq!(rec.filename, "", "the tombstone forgets the file name");
        // What the deleter and a replay need stays.
        assert_eq!(rec.original_key, before.original_key);
        assert_eq!(rec.versions, before.versions);
        assert_eq!(rec.generation, before.generation);
    }
    // Whatever a processor still appends is refused, not applied.
    let late = [
        happy_path(),
        vec![deleted(), rendered(VersionName::Thumb, 1)],
    ]
    .concat();
    assert_eq!(
        given(late).fold().unwrap_err(),
        FoldError::Deleted {
            kind: EventKind::VersionRendered
        }
    );
}

#[test]
fn illegal_transitions_are_errors_not_panics() {
    let cases: Vec<(Vec<EventBody>, FoldError)> = vec![
        (
            vec![uploaded(1)],
            FoldError::UnknownImage {
                kind: EventKind::Uploaded,
            },
        ),
        (vec![requested(), requested()], FoldError::AlreadyExists),
        (
            vec![requested(), started(0)],
            FoldError::IllegalTransition {
                state: ImageState::Init,
                kind: EventKind::ProcessingStarted,
            },
        ),
        (
            vec![requested(), uploaded(1), uploaded(1)],
            FoldError::IllegalTransition {
                state: ImageState::Uploaded,
                kind: EventKind::Uploaded,
            },
        ),
        (
            vec![requested(), uploaded(1), processed(1)],
            FoldError::IllegalTransition {
                state: ImageState::Uploaded,
                kind: EventKind::Processed,
            },
        ),
        (
            // One generation never gets two outcomes.
            [happy_path(), vec![failed(ErrorCode::CorruptImage, 1)]].concat(),
            FoldError::IllegalTransition {
                state: ImageState::Done,
                kind: EventKind::Failed,
            },
        ),
        (
            vec![requested(), uploaded(1), reprocess(2)],
            FoldError::IllegalTransition {
                state: ImageState::Uploaded,
                kind: EventKind::ReprocessRequested,
            },
        ),
        (
            [happy_path(), vec![deleted(), reprocess(2)]].concat(),
            FoldError::Deleted {
                kind: EventKind::ReprocessRequested,
            },
        ),
        (
            vec![requested(), deleted(), deleted()],
            FoldError::Deleted {
                kind: EventKind::Deleted,
            },
        ),
        (
            [happy_path(), vec![reprocess(5)]].concat(),
            FoldError::StaleGeneration {
                kind: EventKind::ReprocessRequested,
                event: 5,
                current: 1,
            },
        ),
    ];
    for (events, want) in cases {
        assert_eq!(
            given(events.clone()).fold().unwrap_err(),
            want,
            "{events:?}"
        );
    }
}

#[test]
fn refusals_are_noted_in_the_record_once_and_capped() {
    let g = given(vec![requested()]);
    let first = g.fold().unwrap();
    let event = |body: EventBody| Event {
        image_id: g.image,
        project_id: g.project.clone(),
        at: at(5_000),
        body,
    };
    // A second upload request for the image: refused, noted, nothing else changes.
    let (rec, err) = fold_event(Some(first.clone()), 7, &event(requested()));
    assert_eq!(err, Some(FoldError::AlreadyExists));
    let rec = rec.unwrap();
    assert_eq!(rec.refused, [7]);
    assert_eq!(
        Record {
            refused: Vec::new(),
            ..rec.clone()
        },
        first
    );
    // The same event again (a replay) is noted once.
    let (again, _) = fold_event(Some(rec), 7, &event(requested()));
    assert_eq!(again.as_ref().unwrap().refused, [7]);
    // Taken events note nothing.
    let (taken, err) = fold_event(again, 8, &event(uploaded(1)));
    assert_eq!(err, None);
    assert_eq!(taken.as_ref().unwrap().refused, [7]);
    // The oldest go first past the cap.
    let mut rec = taken;
    for seq in 100..100 + crate::record::MAX_REFUSED as u64 {
        rec = fold_event(rec, seq, &event(requested())).0;
    }
    let refused = &rec.unwrap().refused;
    assert_eq!(refused.len(), crate::record::MAX_REFUSED);
    assert_eq!(refused[0], 100);
    // An image the model doesn't know has no record to note anything in.
    let (none, err) = fold_event(None, 9, &event(uploaded(1)));
    assert!(none.is_none());
    assert!(matches!(err, Some(FoldError::UnknownImage { .. })));
}
