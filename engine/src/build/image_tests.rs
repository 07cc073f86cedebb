use std::time::Duration;

use super::*;
use crate::build::dockerfile::instructions::Command;

fn busybox() -> ImageDoc {
    ImageDoc::from_value(json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:base"]},
        "history": [{"created_by": "/bin/sh -c #(nop) ADD file:x in / "}],
    }))
}

fn apply(doc: &mut ImageDoc, instruction: Instruction) -> String {
    apply_metadata(doc, &instruction, false).unwrap().created_by
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn env_replaces_or_appends_and_writes_docker_history() {
    let mut doc = busybox();
    let line = apply(
        &mut doc,
        Instruction::Env(pairs(&[("PATH", "/usr/bin:/bin"), ("A", "two words")])),
    );
    assert_eq!(
        line,
        "/bin/sh -c #(nop)  ENV PATH=/usr/bin:/bin A=two words"
    );
    assert_eq!(
        doc.config["Env"],
        json!(["PATH=/usr/bin:/bin", "A=two words"])
    );
}

#[test]
fn cmd_and_entrypoint_in_both_forms() {
    let mut doc = busybox();
    let line = apply(
        &mut doc,
        Instruction::Cmd(Command::Shell("echo \"hi\"".into())),
    );
    assert_eq!(doc.config["Cmd"], json!(["/bin/sh", "-c", "echo \"hi\""]));
    assert_eq!(
        line,
        "/bin/sh -c #(nop)  CMD [\"/bin/sh\" \"-c\" \"echo \\\"hi\\\"\"]"
    );
    let line = apply(
        &mut doc,
        Instruction::Entrypoint(Command::Exec(vec!["/app".into(), "--serve".into()])),
    );
    assert_eq!(line, "/bin/sh -c #(nop)  ENTRYPOINT [\"/app\" \"--serve\"]");
    assert_eq!(doc.config["Entrypoint"], json!(["/app", "--serve"]));
    // An ENTRYPOINT drops the CMD inherited from the base...
    assert_eq!(doc.config["Cmd"], Value::Null);
    // ...but not one the stage gave.
    let mut doc = busybox();
    apply_metadata(
        &mut doc,
        &Instruction::Entrypoint(Command::Exec(vec!["/app".into()])),
        true,
    )
    .unwrap();
    assert_eq!(doc.config["Cmd"], json!(["sh"]));
}

#[test]
fn shell_changes_the_lines_after_it() {
    let mut doc = busybox();
    let line = apply(
        &mut doc,
        Instruction::Shell(vec!["/bin/bash".into(), "-ec".into()]),
    );
    assert_eq!(line, "/bin/sh -c #(nop)  SHELL [/bin/bash -ec]");
    let line = apply(&mut doc, Instruction::Cmd(Command::Shell("x".into())));
    assert_eq!(
        line,
        "/bin/bash -ec #(nop)  CMD [\"/bin/bash\" \"-ec\" \"x\"]"
    );
}

#[test]
fn expose_ports_and_ranges() {
    let mut doc = busybox();
    let line = apply(
        &mut doc,
        Instruction::Expose(vec!["80".into(), "53/UDP".into(), "8000-8001".into()]),
    );
    assert_eq!(line, "/bin/sh -c #(nop)  EXPOSE 80 53/UDP 8000-8001");
    assert_eq!(
        doc.config["ExposedPorts"],
        json!({"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}})
    );
    assert_eq!(
        apply_metadata(&mut doc, &Instruction::Expose(vec!["http".into()]), false).unwrap_err(),
        ImageConfigError::InvalidPort("http".into())
    );
    assert_eq!(
        apply_metadata(&mut doc, &Instruction::Expose(vec!["80/xyz".into()]), false).unwrap_err(),
        ImageConfigError::InvalidProto("xyz".into())
    );
}

#[test]
fn volume_user_label_stopsignal_maintainer_onbuild_arg() {
    let mut doc = busybox();
    assert_eq!(
        apply(
            &mut doc,
            Instruction::Volume(vec!["/data".into(), "/x".into()])
        ),
        "/bin/sh -c #(nop)  VOLUME [/data /x]"
    );
    assert_eq!(doc.config["Volumes"], json!({"/data": {}, "/x": {}}));
    assert_eq!(
        apply(&mut doc, Instruction::User("app:app".into())),
        "/bin/sh -c #(nop)  USER app:app"
    );
    assert_eq!(doc.config["User"], json!("app:app"));
    assert_eq!(
        apply(&mut doc, Instruction::Label(pairs(&[("a.b", "c d")]))),
        "/bin/sh -c #(nop)  LABEL a.b=c d"
    );
    assert_eq!(doc.config["Labels"], json!({"a.b": "c d"}));
    assert_eq!(
        apply(&mut doc, Instruction::StopSignal("SIGQUIT".into())),
        "/bin/sh -c #(nop)  STOPSIGNAL SIGQUIT"
    );
    assert_eq!(
        apply_metadata(&mut doc, &Instruction::StopSignal("SIGNOPE".into()), false).unwrap_err(),
        ImageConfigError::InvalidSignal("SIGNOPE".into())
    );
    assert_eq!(
        apply(&mut doc, Instruction::Maintainer("Jo <jo@x>".into())),
        "/bin/sh -c #(nop)  MAINTAINER Jo <jo@x>"
    );
    assert_eq!(doc.top["author"], json!("Jo <jo@x>"));
    assert_eq!(
        apply(&mut doc, Instruction::Onbuild("RUN echo hi".into())),
        "/bin/sh -c #(nop)  ONBUILD RUN echo hi"
    );
    assert_eq!(doc.config["OnBuild"], json!(["RUN echo hi"]));
    assert_eq!(
        apply(
            &mut doc,
            Instruction::Arg(vec![("A".into(), None), ("B".into(), Some("1".into()))])
        ),
        "/bin/sh -c #(nop)  ARG A B=1"
    );
}

#[test]
fn healthcheck_as_go_prints_it() {
    let mut doc = busybox();
    let line = apply(
        &mut doc,
        Instruction::Healthcheck(Healthcheck {
            test: vec!["CMD-SHELL".into(), "curl -f http://x/".into()],
            interval: Some(Duration::from_secs(5)),
            timeout: Some(Duration::from_secs(90)),
            start_period: None,
            start_interval: None,
            retries: Some(3),
        }),
    );
    assert_eq!(
        line,
        "/bin/sh -c #(nop)  HEALTHCHECK &{[\"CMD-SHELL\" \"curl -f http://x/\"] \"5s\" \"1m30s\" \"0s\" '\\x03'}"
    );
    assert_eq!(
        doc.config["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "curl -f http://x/"], "Interval": 5_000_000_000u64,
               "Timeout": 90_000_000_000u64, "Retries": 3})
    );
}

#[test]
fn steps_that_are_not_metadata_are_refused() {
    let mut doc = busybox();
    assert_eq!(
        apply_metadata(&mut doc, &Instruction::Workdir("/x".into()), false).unwrap_err(),
        ImageConfigError::NotMetadata("WORKDIR")
    );
}

#[test]
fn history_and_layers() {
    let mut doc = busybox();
    push_history(
        &mut doc,
        "2026-01-01T00:00:00Z",
        "/bin/sh -c #(nop)  ENV A=1",
        None,
    );
    push_history(
        &mut doc,
        "2026-01-01T00:00:01Z",
        "/bin/sh -c touch /x",
        Some("sha256:top"),
    );
    let value = doc.to_value();
    assert_eq!(
        value["rootfs"]["diff_ids"],
        json!(["sha256:base", "sha256:top"])
    );
    assert_eq!(value["history"][1]["empty_layer"], json!(true));
    assert_eq!(value["history"][2].get("empty_layer"), None);
    assert_eq!(
        value["history"][2]["created_by"],
        json!("/bin/sh -c touch /x")
    );
    assert_eq!(value["created"], json!("2026-01-01T00:00:01Z"));
    assert_eq!(value["config"]["Cmd"], json!(["sh"]));
}

#[test]
fn an_empty_parent_is_scratch() {
    let mut doc = ImageDoc::from_value(Value::Null);
    push_history(
        &mut doc,
        "t",
        "/bin/sh -c #(nop) COPY file:x in / ",
        Some("sha256:a"),
    );
    assert_eq!(
        doc.to_value()["rootfs"],
        json!({"type": "layers", "diff_ids": ["sha256:a"]})
    );
    assert_eq!(doc.shell(), default_shell());
}

#[test]
fn workdirs_resolve_against_the_current_one() {
    assert_eq!(resolve_workdir("", "app"), "/app");
    assert_eq!(resolve_workdir("/srv", "app/../web/"), "/srv/web");
    assert_eq!(resolve_workdir("/srv", "/abs"), "/abs");
}

#[test]
fn go_texts() {
    assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    assert_eq!(go_duration(Duration::from_secs(5)), "5s");
    assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(go_duration(Duration::from_millis(100)), "100ms");
    assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    assert_eq!(go_duration(Duration::ZERO), "0s");
    assert_eq!(go_quote("a\tb\u{1}"), "\"a\\tb\\x01\"");
    assert_eq!(go_list(&["a".into(), "b c".into()]), "[a b c]");
}

#[test]
fn cache_keys_change_with_parent_config_or_step() {
    let config = json!({"Env": ["A=1"]});
    let key = cache_key("sha256:p", &config, "/bin/sh -c x");
    assert_eq!(key, cache_key("sha256:p", &config, "/bin/sh -c x"));
    assert_ne!(key, cache_key("sha256:q", &config, "/bin/sh -c x"));
    assert_ne!(
        key,
        cache_key("sha256:p", &json!({"Env": ["A=2"]}), "/bin/sh -c x")
    );
    assert_ne!(key, cache_key("sha256:p", &config, "/bin/sh -c y"));
}
