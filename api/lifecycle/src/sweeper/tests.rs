use super::*;
use gallery_schema::{
    ErrorCode, Event, EventBody, ProjectId, UploadRequested, Uploaded, event::Failure,
};

const HOUR: i64 = 3600;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

fn policy() -> SweepPolicy {
    SweepPolicy::for_links(
        Duration::from_secs(HOUR as u64),
        Duration::from_secs(7 * 24 * HOUR as u64),
    )
}

/// A record after these events, the last one at `at`.
fn record(bodies: Vec<EventBody>, at: DateTime<Utc>) -> Record {
    let p = ProjectId::parse("p").unwrap();
    let id = ImageId::parse("019a0000-0000-7000-8000-000000000001").unwrap();
    let mut events = vec![EventBody::UploadRequested(UploadRequested {
        filename: "f.jpg".into(),
        object_key: keys::original_key(&p, &id),
        content_type: "image/jpeg".into(),
        declared_size: None,
        link_expires_at: at,
        max_bytes: 10,
        source_url: None,
    })];
    events.extend(bodies);
    let mut rec = None;
    for (n, body) in events.into_iter().enumerate() {
        let event = Event {
            at,
            ..Event::new(p.clone(), id, body)
        };
        rec = Some(gallery_projector::apply(rec, n as u64 + 1, &event).unwrap());
    }
    rec.unwrap()
}

fn uploaded() -> EventBody {
    EventBody::Uploaded(Uploaded {
        size: 1,
        etag: "e".into(),
        generation: 1,
    })
}

fn failed(code: ErrorCode, generation: u32) -> EventBody {
    EventBody::Failed(Failure {
        code,
        message: String::new(),
        retryable: code == ErrorCode::RetriesExhausted,
        generation,
    })
}

#[test]
fn keys_name_their_owner_and_nothing_else_is_touched() {
    let p = ProjectId::parse("p").unwrap();
    let i = ImageId::new_v7();
    assert_eq!(owner(&keys::original_key(&p, &i)), Owner::Original(i));
    assert_eq!(
        owner(&keys::legacy_original_key(&p, &i)),
        Owner::Original(i)
    );
    assert_eq!(
        owner(&keys::version_key(
            &p,
            &i,
            3,
            gallery_schema::VersionName::Thumb,
            "jpg"
        )),
        Owner::Version(i, 3)
    );
    assert_eq!(owner(&format!("tmp/uploads/{i}-x")), Owner::Staging);
    for kept in [
        "snapshots/readmodel/00000000000000000042.lgsnap.zst",
        "ready-probe",
        "originals/p",
        "versions/p/x/1/thumb.jpg",
        "something/else",
    ] {
        assert_eq!(owner(kept), Owner::Other, "{kept}");
        // Whatever its age, with or without a record.
        assert_eq!(
            judge(&Owner::Other, t(0), None, t(1_000 * 24 * HOUR), &policy()),
            None
        );
    }
}

#[test]
fn refused_and_expired_originals_go_after_the_retention_processed_ones_never() {
    let week = 7 * 24 * HOUR;
    let original = Owner::Original(ImageId::new_v7());
    for code in [
        ErrorCode::UploadExpired,
        ErrorCode::UnsupportedFormat,
        ErrorCode::UploadTooLarge,
    ] {
        let rec = record(vec![failed(code, 0)], t(0));
        assert_eq!(
            judge(&original, t(0), Some(&rec), t(week - 1), &policy()),
            None
        );
        assert_eq!(
            judge(&original, t(0), Some(&rec), t(week), &policy()),
            Some(Reason::Refused),
            "{code:?}"
        );
    }
    // Uploaded originals stay, whatever happened after: they can be reprocessed or
    // re-driven (a corrupt one, an outage that outlasted the budget) or are done.
    let ages = [t(week * 10)];
    for bodies in [
        vec![uploaded()],
        vec![uploaded(), failed(ErrorCode::CorruptImage, 1)],
        vec![uploaded(), failed(ErrorCode::RetriesExhausted, 1)],
    ] {
        let rec = record(bodies, t(0));
        for now in ages {
            assert_eq!(judge(&original, t(0), Some(&rec), now, &policy()), None);
        }
    }
    // An image still waiting for its upload keeps whatever is there.
    let waiting = record(vec![], t(0));
    assert_eq!(
        judge(&original, t(0), Some(&waiting), t(week * 10), &policy()),
        None
    );
}

#[test]
fn superseded_versions_go_after_the_link_lifetime_plus_an_hour() {
    let i = ImageId::new_v7();
    let rec = record(
        vec![
            uploaded(),
            failed(ErrorCode::CorruptImage, 1),
            EventBody::ReprocessRequested { generation: 2 },
        ],
        t(0),
    );
    let old = Owner::Version(i, 1);
    let current = Owner::Version(i, 2);
    let newer = Owner::Version(i, 3);
    // Links of the old generation were handed out until t(0): valid up to 2 h later.
    assert_eq!(
        judge(&old, t(0), Some(&rec), t(2 * HOUR - 1), &policy()),
        None
    );
    assert_eq!(
        judge(&old, t(0), Some(&rec), t(2 * HOUR), &policy()),
        Some(Reason::Superseded)
    );
    for kept in [current, newer] {
        assert_eq!(
            judge(&kept, t(0), Some(&rec), t(1_000 * HOUR), &policy()),
            None
        );
    }
}

#[test]
fn a_superseded_generation_still_served_is_kept() {
    use gallery_schema::{VersionName, VersionRendered};
    let i = ImageId::new_v7();
    let rendered = |version: VersionName, generation: u32| {
        EventBody::VersionRendered(VersionRendered {
            version,
            key: format!("versions/p/{i}/{generation}/{version}.jpg"),
            width: 1,
            height: 1,
            bytes: 1,
            content_type: "image/jpeg".into(),
            generation,
        })
    };
    let started = |generation: u32| EventBody::ProcessingStarted {
        attempt: 1,
        generation,
    };
    let mut events = vec![uploaded(), started(1), rendered(VersionName::Thumb, 1)];
    events.extend([
        rendered(VersionName::BigThumb, 1),
        EventBody::Processed {
            generation: 1,
            width: 1,
            height: 1,
            thumbhash: Vec::new(),
            sha256: None,
            renditions_version: 1,
        },
        EventBody::ReprocessRequested { generation: 2 },
        started(2),
        rendered(VersionName::Thumb, 2),
    ]);
    // Generation 2 replaced the thumb and not yet the big thumb: generation 1 is still
    // served, however old.
    let rendering = record(events.clone(), t(0));
    let old = Owner::Version(i, 1);
    assert_eq!(
        judge(&old, t(0), Some(&rendering), t(1_000 * HOUR), &policy()),
        None
    );
    // Once generation 2 has replaced them all, generation 1 goes after the grace.
    events.extend([
        rendered(VersionName::BigThumb, 2),
        EventBody::Processed {
            generation: 2,
            width: 1,
            height: 1,
            thumbhash: Vec::new(),
            sha256: None,
            renditions_version: 1,
        },
    ]);
    let done = record(events, t(0));
    assert_eq!(
        judge(&old, t(0), Some(&done), t(2 * HOUR), &policy()),
        Some(Reason::Superseded)
    );
}

#[test]
fn deleted_and_unknown_images_and_stale_staging_files_go() {
    let i = ImageId::new_v7();
    let deleted = record(
        vec![
            uploaded(),
            EventBody::Deleted {
                whole_project: false,
            },
        ],
        t(0),
    );
    for owner in [Owner::Original(i), Owner::Version(i, 1)] {
        assert_eq!(
            judge(&owner, t(0), Some(&deleted), t(HOUR - 1), &policy()),
            None
        );
        assert_eq!(
            judge(&owner, t(0), Some(&deleted), t(HOUR), &policy()),
            Some(Reason::Deleted)
        );
        // Unknown to the model: kept, however old (a model still rebuilding from the log
        // doesn't know live images).
        assert_eq!(judge(&owner, t(0), None, t(HOUR), &policy()), None);
        assert_eq!(
            judge(&owner, t(0), None, t(1_000 * 24 * HOUR), &policy()),
            None
        );
    }
    assert_eq!(judge(&Owner::Staging, t(0), None, t(HOUR), &policy()), None);
    assert_eq!(
        judge(&Owner::Staging, t(0), None, t(24 * HOUR), &policy()),
        Some(Reason::Staging)
    );
}
