//! Redis RDB dump and restore into a new instance, against real throwaway servers.

use lifeboat_sources::redis::{
    plan_data_dir, restore_to_data_dir, RedisConnection, RedisRestoreOptions, RedisSource,
};
use lifeboat_sources::{DirStreams, DumpSource, Error, Secret};
use lifeboat_testkit::redis::{RedisOptions, RedisServer};

#[test]
fn rdb_dump_restores_into_new_instance_with_same_key_count() {
    let pw = "t0p-s3cret-pw";
    let r = RedisServer::start_with(RedisOptions {
        password: Some(pw.into()),
        data_dir: None,
    })
    .unwrap();
    r.cli(&["debug", "populate", "20000", "k", "32"]).unwrap();
    r.cli(&["hset", "h", "a", "1", "b", "2"]).unwrap();
    r.cli(&["rpush", "l", "x", "y", "z"]).unwrap();
    r.cli(&["set", "ttl", "v", "EX", "3600"]).unwrap();
    r.cli(&["-n", "3", "set", "other-db", "1"]).unwrap();
    assert_eq!(r.dbsize().unwrap(), 20003);

    let conn = RedisConnection {
        port: r.port(),
        password: Some(Secret::new(pw)),
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = DirStreams::create(tmp.path().join("b")).unwrap();
    let meta = RedisSource::new(conn.clone()).dump(&mut sink).unwrap();
    assert_eq!(meta.database("db0").unwrap().keys, Some(20003));
    assert_eq!(meta.database("db0").unwrap().volatile_keys, Some(1));
    assert_eq!(meta.database("db3").unwrap().keys, Some(1));
    assert!(meta.server_version.as_deref().unwrap().starts_with('7'));
    let json = serde_json::to_string(&meta).unwrap();
    assert!(!json.contains(pw));

    let target = tmp.path().join("restored");
    let report = restore_to_data_dir(
        &meta,
        &mut DirStreams::open(tmp.path().join("b")),
        &target,
        &RedisRestoreOptions::default(),
    )
    .unwrap();
    assert_eq!(
        report.verified,
        vec![("db0".to_string(), 20003), ("db3".to_string(), 1)]
    );

    // Independently: a server started on the restored directory has the same data.
    let r2 = RedisServer::start_with(RedisOptions {
        password: None,
        data_dir: Some(target.clone()),
    })
    .unwrap();
    assert_eq!(r2.dbsize().unwrap(), 20003);
    assert_eq!(r2.cli(&["hget", "h", "b"]).unwrap(), "2");
    assert_eq!(r2.cli(&["lrange", "l", "0", "-1"]).unwrap(), "x\ny\nz");
    let ttl: i64 = r2.cli(&["ttl", "ttl"]).unwrap().parse().unwrap();
    assert!(ttl > 3000, "ttl kept: {ttl}");
    drop(r2);

    // A directory that already holds data is refused.
    let err = plan_data_dir(&meta, &target, &RedisRestoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");

    // A doctored key count fails verification.
    let mut wrong = meta.clone();
    wrong.databases[0].keys = Some(30000);
    let err = restore_to_data_dir(
        &wrong,
        &mut DirStreams::open(tmp.path().join("b")),
        &tmp.path().join("r3"),
        &RedisRestoreOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Verification(_)), "{err}");

    // A wrong password fails without echoing it.
    let bad = RedisConnection {
        password: Some(Secret::new("wrong-pw-xyz")),
        ..conn
    };
    let err = RedisSource::new(bad)
        .dump(&mut DirStreams::create(tmp.path().join("c")).unwrap())
        .unwrap_err();
    assert!(!err.to_string().contains("wrong-pw-xyz"), "{err}");
}
