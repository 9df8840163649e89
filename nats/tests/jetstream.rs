//! Against a real nats-server: the topology is idempotent, appends are deduplicated and
//! guarded per image, and history reads return exactly what was appended.

use std::time::Duration;

use gallery_nats::{AppendError, EventLog, Guard, NatsServer, read, topology};
use gallery_schema::{Event, EventBody, ImageId, ProjectId, Uploaded, subjects};

fn uploaded(p: &ProjectId, i: ImageId, generation: u32) -> Event {
    Event::new(
        p.clone(),
        i,
        EventBody::Uploaded(Uploaded {
            size: 1,
            etag: "e".into(),
            generation,
        }),
    )
}

#[tokio::test]
async fn appends_are_idempotent_guarded_and_readable() {
    let server = NatsServer::start_temp().await.unwrap();
    let client = gallery_nats::connect(&server.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    // Declaring twice is harmless.
    let stream = topology::ensure_stream(&js, 1).await.unwrap();
    topology::ensure_stream(&js, 1).await.unwrap();
    topology::ensure_processor_consumer(&stream, &Default::default())
        .await
        .unwrap();
    topology::ensure_processor_consumer(&stream, &Default::default())
        .await
        .unwrap();

    let log = EventLog::new(js.clone());
    let p = ProjectId::parse("p1").unwrap();
    let (a, b) = (ImageId::new_v7(), ImageId::new_v7());

    let first = log
        .append(&uploaded(&p, a, 1), Guard::LastImageSeq(0))
        .await
        .unwrap();
    assert!(!first.duplicate);
    // The same event again is a duplicate with the same sequence.
    let again = log.append(&uploaded(&p, a, 1), Guard::None).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);

    // Another image's events don't move image a's guard...
    let other = log
        .append(&uploaded(&p, b, 1), Guard::LastImageSeq(0))
        .await
        .unwrap();
    let next = EventBody::ProcessingStarted {
        attempt: 1,
        generation: 1,
    };
    let second = log
        .append(
            &Event::new(p.clone(), a, next.clone()),
            Guard::LastImageSeq(first.seq),
        )
        .await
        .unwrap();
    assert!(second.seq > other.seq);
    // ...but a stale guard on image a is refused.
    let stale = Event::new(
        p.clone(),
        a,
        EventBody::ReprocessRequested { generation: 2 },
    );
    let err = log
        .append(&stale, Guard::LastImageSeq(first.seq))
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Conflict), "{err:?}");

    let history = read::read_until_now(
        &js,
        subjects::image_filter(&p, &a),
        1,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let seqs: Vec<u64> = history.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, vec![first.seq, second.seq]);
    assert_eq!(history[1].event.body, next);

    let none = read::read_until_now(
        &js,
        subjects::image_filter(&p, &ImageId::new_v7()),
        1,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn events_survive_a_server_restart_on_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let p = ProjectId::parse("keep").unwrap();
    let i = ImageId::new_v7();
    {
        let server = NatsServer::start_in(dir.path()).await.unwrap();
        let client = gallery_nats::connect(&server.url(), Duration::from_secs(5))
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        topology::ensure_stream(&js, 1).await.unwrap();
        EventLog::new(js)
            .append(&uploaded(&p, i, 1), Guard::None)
            .await
            .unwrap();
    }
    let server = NatsServer::start_in(dir.path()).await.unwrap();
    let client = gallery_nats::connect(&server.url(), Duration::from_secs(5))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    topology::ensure_stream(&js, 1).await.unwrap();
    let history = read::read_until_now(
        &js,
        subjects::image_filter(&p, &i),
        1,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(history.len(), 1);
}
