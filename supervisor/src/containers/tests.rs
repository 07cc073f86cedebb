//! Spec generation, user lookup, validation and filters.

use super::*;

fn image() -> ProcessConfig {
    ProcessConfig {
        entrypoint: Some(vec!["/bin/entry".to_string(), "-x".to_string()]),
        cmd: Some(vec!["serve".to_string()]),
        env: Some(vec![
            "PATH=/bin".to_string(),
            "A=1".to_string(),
            "B=2".to_string(),
        ]),
        working_dir: Some("/srv".to_string()),
        user: Some("1000:100".to_string()),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn image_config_gives_the_process() {
    let spec = generate_spec(&image(), &Overrides::default(), &accounts()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.args().as_ref().unwrap(),
        &strings(&["/bin/entry", "-x", "serve"])
    );
    assert_eq!(
        p.env().as_ref().unwrap(),
        &strings(&["PATH=/bin", "A=1", "B=2"])
    );
    assert_eq!(p.cwd(), &PathBuf::from("/srv"));
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 100));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(
        spec.root().as_ref().unwrap().path(),
        &PathBuf::from("rootfs")
    );
}

#[test]
fn overrides_replace_and_merge() {
    let o = Overrides {
        args: strings(&["sh", "-c", "echo hi"]),
        env: strings(&["B=3", "C=4", "A="]),
        cwd: Some("/tmp".to_string()),
        user: Some("5".to_string()),
        terminal: true,
        hostname: Some("box".to_string()),
        memory_limit: Some(32 << 20),
    };
    let spec = generate_spec(&image(), &o, &accounts()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.args().as_ref().unwrap(),
        &strings(&["sh", "-c", "echo hi"])
    );
    assert_eq!(
        p.env().as_ref().unwrap(),
        &strings(&["PATH=/bin", "A=", "B=3", "C=4", "TERM=xterm"])
    );
    assert_eq!(p.cwd(), &PathBuf::from("/tmp"));
    assert_eq!((p.user().uid(), p.user().gid()), (5, 0));
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(spec.hostname().as_deref(), Some("box"));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
    let memory = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
    let memory = memory.memory().as_ref().unwrap();
    assert_eq!(
        (memory.limit(), memory.swap()),
        (Some(32 << 20), Some(32 << 20))
    );
}

#[test]
fn a_bare_image_gets_defaults() {
    let bare = ProcessConfig {
        cmd: Some(strings(&["sh"])),
        ..Default::default()
    };
    let spec = generate_spec(&bare, &Overrides::default(), &accounts()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.env().as_ref().unwrap(), &strings(&[DEFAULT_PATH]));
    assert_eq!(p.cwd(), &PathBuf::from("/"));
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    // Nothing to run at all is an error, not `sh` from the default spec.
    let err = generate_spec(
        &ProcessConfig::default(),
        &Overrides::default(),
        &accounts(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no Entrypoint or Cmd"), "{err}");
}

fn accounts() -> Accounts {
    Accounts {
        passwd: "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\n\
                 app:x:1000:1000::/home/app:/bin/sh\nbroken line\n"
            .to_string(),
        group: "root:x:0:\nwww-data:x:33:\napp:x:1000:\nstaff:x:50:app,other\n\
                audio:x:29:app\n"
            .to_string(),
    }
}

#[test]
fn users_resolve_in_the_image_files() {
    let a = accounts();
    let r = |s: &str| a.resolve(s).map(|u| (u.uid, u.gid, u.additional_gids));
    assert_eq!(r("0").unwrap(), (0, 0, vec![]));
    assert_eq!(r("1000:1001").unwrap(), (1000, 1001, vec![]));
    assert_eq!(r("www-data").unwrap(), (33, 33, vec![]));
    assert_eq!(r("app").unwrap(), (1000, 1000, vec![50, 29]));
    assert_eq!(r("1000").unwrap(), (1000, 1000, vec![50, 29]));
    assert_eq!(r("app:staff").unwrap(), (1000, 50, vec![]));
    assert_eq!(r("4242").unwrap(), (4242, 0, vec![]));
    assert_eq!(r("www-data:7").unwrap(), (33, 7, vec![]));
    for bad in ["", ":1", "-1", "1:2:3", "a b"] {
        let err = a.resolve(bad).unwrap_err().to_string();
        assert!(err.contains("invalid user"), "{bad:?}: {err}");
    }
    let err = a.resolve("nobody").unwrap_err().to_string();
    assert!(
        err.contains("unable to find user nobody: no matching entries in passwd file"),
        "{err}"
    );
    let err = a.resolve("app:wheel").unwrap_err().to_string();
    assert!(
        err.contains("unable to find group wheel: no matching entries in group file"),
        "{err}"
    );
    let named = ProcessConfig {
        user: Some("www-data".to_string()),
        ..image()
    };
    let spec = generate_spec(&named, &Overrides::default(), &accounts()).unwrap();
    let user = spec.process().as_ref().unwrap().user().clone();
    assert_eq!((user.uid(), user.gid()), (33, 33));
    let err = generate_spec(&named, &Overrides::default(), &Accounts::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("www-data") && err.contains("passwd file"),
        "{err}"
    );
}

#[test]
fn hostile_overrides_are_refused() {
    let cases: Vec<(Overrides, &str)> = vec![
        (
            Overrides {
                env: strings(&["NOEQUALS"]),
                ..Default::default()
            },
            "not KEY=VALUE",
        ),
        (
            Overrides {
                env: strings(&["=x"]),
                ..Default::default()
            },
            "not KEY=VALUE",
        ),
        (
            Overrides {
                args: strings(&["sh", "a\0b"]),
                ..Default::default()
            },
            "NUL",
        ),
        (
            Overrides {
                cwd: Some("relative/dir".to_string()),
                ..Default::default()
            },
            "not an absolute path",
        ),
        (
            Overrides {
                hostname: Some("bad host".to_string()),
                ..Default::default()
            },
            "hostname",
        ),
        (
            Overrides {
                memory_limit: Some(4096),
                ..Default::default()
            },
            "at least 1 MiB",
        ),
    ];
    for (o, want) in cases {
        let err = generate_spec(&image(), &o, &accounts()).unwrap_err();
        assert!(
            matches!(err, ContainerError::InvalidOverride { .. }),
            "{o:?}: {err:?}"
        );
        assert!(err.to_string().contains(want), "{o:?}: {err}");
    }
}

#[test]
fn given_specs_are_checked() {
    assert!(matches!(
        parse_spec(b"{not json"),
        Err(ContainerError::InvalidSpec(_))
    ));
    let spec = generate_spec(&image(), &Overrides::default(), &accounts()).unwrap();
    let again = parse_spec(spec_json(&spec).unwrap().as_bytes()).unwrap();
    let again: Spec = serde_json::from_str(&again).unwrap();
    assert_eq!(again.process(), spec.process());
    let err = parse_spec(br#"{"ociVersion": "1.0.2"}"#).unwrap_err();
    assert!(err.to_string().contains("no process"), "{err}");
}

#[test]
fn ids_are_checked() {
    for good in ["a", "web-1", "A.b_c", &"x".repeat(128)] {
        validate_id(good).unwrap();
    }
    for bad in ["", "-a", ".a", "a/b", "a b", "a\0", &"x".repeat(129)] {
        assert!(validate_id(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn image_process_config_is_read() {
    let doc = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
        "config":{"Entrypoint":null,"Cmd":["sh"],"Env":["A=1"],"WorkingDir":"","User":""}}"#;
    let c = ProcessConfig::from_image_config(doc).unwrap();
    assert_eq!(c.cmd, Some(strings(&["sh"])));
    assert_eq!(c.entrypoint, None);
    let none = ProcessConfig::from_image_config(br#"{"rootfs":{}}"#).unwrap();
    assert!(none.cmd.is_none());
}

#[test]
fn label_filters_parse() {
    let f = Filter::parse_labels(&strings(&["a=1", "b"])).unwrap();
    assert_eq!(
        f,
        vec![
            ("a".to_string(), Some("1".to_string())),
            ("b".to_string(), None)
        ]
    );
    assert!(Filter::parse_labels(&strings(&["=1"])).is_err());
}
