use super::*;

fn volumes() -> (tempfile::TempDir, Volumes, Events) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("engine.redb")).unwrap());
    let v = Volumes::load(store, dir.path().join("volumes"), []).unwrap();
    (dir, v, Events::new())
}

fn named(name: &str) -> CreateOptions {
    CreateOptions {
        name: name.into(),
        ..CreateOptions::default()
    }
}

fn filters(pairs: &[(&str, &str)]) -> Filters {
    let mut f = Filters::new();
    for (k, v) in pairs {
        f.entry(k.to_string()).or_default().insert(v.to_string());
    }
    f
}

#[test]
fn create_makes_the_directory_and_again_returns_it() {
    let (_dir, v, events) = volumes();
    let (rec, new) = v.create(&events, named("data")).unwrap();
    assert!(new);
    assert!(v.mountpoint("data").is_dir());
    assert_eq!(rec.driver, "local");
    let (again, new) = v.create(&events, named("data")).unwrap();
    assert!(!new);
    assert_eq!(again, rec);
    let (anon, _) = v.create(&events, CreateOptions::default()).unwrap();
    assert_eq!(anon.name.len(), 64);
}

#[test]
fn bad_names_drivers_and_options_make_nothing() {
    let (_dir, v, events) = volumes();
    let err = |o: CreateOptions| v.create(&events, o).unwrap_err().to_string();
    assert!(err(named("a")).contains("too short"));
    assert!(err(named("a/b")).contains("invalid characters"));
    assert!(err(CreateOptions {
        name: "x1".into(),
        driver: "nfs-plugin".into(),
        ..CreateOptions::default()
    })
    .contains("plugin \"nfs-plugin\" not found"));
    assert!(err(CreateOptions {
        name: "x2".into(),
        driver_opts: Some(BTreeMap::from([("bogus".into(), "1".into())])),
        ..CreateOptions::default()
    })
    .contains("invalid option"));
    assert!(v.all().is_empty());
    assert!(!v.dir("x2").exists());
}

#[test]
fn records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let events = Events::new();
    {
        let store = Arc::new(Store::open(&dir.path().join("e.redb")).unwrap());
        let v = Volumes::load(store, dir.path().join("volumes"), []).unwrap();
        v.create(&events, named("keep")).unwrap();
    }
    let store = Arc::new(Store::open(&dir.path().join("e.redb")).unwrap());
    let claims = [("c1".to_string(), BTreeSet::from(["keep".to_string()]))];
    let v = Volumes::load(store, dir.path().join("volumes"), claims).unwrap();
    assert_eq!(v.get("keep").unwrap().name, "keep");
    assert_eq!(v.users("keep"), vec!["c1".to_string()]);
}

#[test]
fn a_volume_in_use_is_not_removed() {
    let (_dir, v, events) = volumes();
    v.create(&events, named("busy")).unwrap();
    v.claim("abc", BTreeSet::from(["busy".to_string()]))
        .unwrap();
    let e = v.remove(&events, "busy", true).unwrap_err();
    assert_eq!(e.to_string(), "remove busy: volume is in use - [abc]");
    v.release("abc");
    v.remove(&events, "busy", false).unwrap();
    assert!(!v.dir("busy").exists());
    assert!(matches!(
        v.remove(&events, "busy", false),
        Err(VolumeError::NotFound(_))
    ));
    v.remove(&events, "busy", true).unwrap();
    assert!(v
        .claim("abc", BTreeSet::from(["gone".to_string()]))
        .is_err());
}

#[test]
fn list_filters() {
    let (_dir, v, events) = volumes();
    v.create(
        &events,
        CreateOptions {
            name: "web-data".into(),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..CreateOptions::default()
        },
    )
    .unwrap();
    v.create(&events, named("db-data")).unwrap();
    v.claim("c", BTreeSet::from(["db-data".to_string()]))
        .unwrap();
    let names = |f: &[(&str, &str)]| -> Vec<String> {
        v.list(&filters(f))
            .unwrap()
            .into_iter()
            .map(|x| x.name)
            .collect()
    };
    assert_eq!(names(&[]), vec!["db-data", "web-data"]);
    assert_eq!(names(&[("dangling", "true")]), vec!["web-data"]);
    assert_eq!(names(&[("dangling", "false")]), vec!["db-data"]);
    assert_eq!(names(&[("name", "web")]), vec!["web-data"]);
    assert_eq!(names(&[("label", "app=web")]), vec!["web-data"]);
    assert_eq!(names(&[("label", "app")]), vec!["web-data"]);
    assert_eq!(names(&[("driver", "local")]).len(), 2);
    assert!(v.list(&filters(&[("colour", "red")])).is_err());
}

#[test]
fn prune_takes_anonymous_volumes_unless_all() {
    let (_dir, v, events) = volumes();
    v.create(&events, named("named")).unwrap();
    let anon_opts = CreateOptions {
        labels: Some(BTreeMap::from([(ANONYMOUS_LABEL.into(), String::new())])),
        ..CreateOptions::default()
    };
    let (anon, _) = v.create(&events, anon_opts.clone()).unwrap();
    let (used, _) = v.create(&events, anon_opts).unwrap();
    v.claim("c", BTreeSet::from([used.name.clone()])).unwrap();
    std::fs::write(v.mountpoint(&anon.name).join("f"), [0u8; 100]).unwrap();
    let (deleted, space) = v.prune(&events, &Filters::new()).unwrap();
    assert_eq!(deleted, vec![anon.name.clone()]);
    assert_eq!(space, 100);
    let (deleted, _) = v.prune(&events, &filters(&[("all", "true")])).unwrap();
    assert_eq!(deleted, vec!["named".to_string()]);
    assert_eq!(v.all().len(), 1);
}

#[test]
fn a_volume_made_for_a_container_is_claimed_at_once() {
    let (_dir, v, events) = volumes();
    let anon = CreateOptions {
        labels: Some(BTreeMap::from([(ANONYMOUS_LABEL.into(), String::new())])),
        ..CreateOptions::default()
    };
    let (made, _) = v.create_for(&events, anon, Some("c1")).unwrap();
    let (deleted, _) = v.prune(&events, &Filters::new()).unwrap();
    assert!(deleted.is_empty());
    v.create_for(&events, named("shared"), Some("c1")).unwrap();
    v.create_for(&events, named("shared"), Some("c2")).unwrap();
    assert_eq!(v.users("shared"), vec!["c1".to_string(), "c2".to_string()]);
    assert_eq!(
        v.release("c1"),
        BTreeSet::from([made.name.clone(), "shared".to_string()])
    );
    assert!(v.remove(&events, "shared", false).is_err());
}
