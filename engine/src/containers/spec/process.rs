//! The container's process: the image config merged into the Config, its
//! args (Entrypoint and Cmd, behind `/sbin/docker-init --` with `--init`),
//! env, working dir, user and rlimits.

use serde_json::{json, Map, Value};

use super::namespaces::Modes;
use super::{SpecError, SpecInput};
use crate::types::{ContainerConfig, HostConfig};

/// Where `--init` puts the init binary in the container, as Docker does.
pub const INIT_PATH: &str = "/sbin/docker-init";

/// PATH when neither the image nor the Config sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The Config with the image's config filled in where the client left
/// things out, as dockerd merges them at create: User, Env (the image's
/// entries whose key the Config does not set are appended), Cmd and
/// Entrypoint (a Config Entrypoint drops the image's Cmd; an Entrypoint of
/// `[""]` drops the image's Entrypoint), WorkingDir, Labels, ExposedPorts,
/// Volumes, StopSignal, Healthcheck, OnBuild. Merging a merged config
/// again changes nothing. Fails when there is nothing to run.
pub fn merge_image_config(
    config: &ContainerConfig,
    image: &ContainerConfig,
) -> Result<ContainerConfig, SpecError> {
    let mut c = config.clone();
    if c.user.is_empty() {
        c.user = image.user.clone();
    }
    if let Some(ports) = &image.exposed_ports {
        let mine = c.exposed_ports.get_or_insert_with(Default::default);
        for (k, v) in ports {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let image_env = image.env.clone().unwrap_or_default();
    match &mut c.env {
        Some(env) if !env.is_empty() => {
            for entry in image_env {
                let key = env_key(&entry);
                if !env.iter().any(|e| env_key(e) == key) {
                    env.push(entry);
                }
            }
        }
        _ => c.env = image.env.clone(),
    }
    if let Some(labels) = &image.labels {
        let mine = c.labels.get_or_insert_with(Default::default);
        for (k, v) in labels {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if c.entrypoint.as_ref().is_none_or(Vec::is_empty) {
        if c.cmd.as_ref().is_none_or(Vec::is_empty) {
            c.cmd = image.cmd.clone();
        }
        if c.entrypoint.is_none() {
            c.entrypoint = image.entrypoint.clone();
        }
    }
    if c.working_dir.is_empty() {
        c.working_dir = image.working_dir.clone();
    }
    if c.volumes.as_ref().is_none_or(|v| v.is_empty()) {
        c.volumes = image.volumes.clone();
    } else if let (Some(mine), Some(theirs)) = (&mut c.volumes, &image.volumes) {
        for (k, v) in theirs {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if c.stop_signal.as_deref().is_none_or(str::is_empty) {
        c.stop_signal = image.stop_signal.clone();
    }
    c.healthcheck =
        crate::containers::health::merge(c.healthcheck.take(), image.healthcheck.as_ref());
    if c.on_build.as_ref().is_none_or(Vec::is_empty) {
        c.on_build = image.on_build.clone();
    }
    // `--entrypoint ""` sends [""]: no entrypoint at all. Kept as an empty
    // list (not null) so that a second merge does not take the image's.
    if c.entrypoint.as_deref() == Some(&[String::new()][..]) {
        c.entrypoint = Some(Vec::new());
    }
    if command(&c).is_empty() {
        return Err(SpecError::NoCommand);
    }
    if !c.working_dir.is_empty() && !c.working_dir.starts_with('/') {
        return Err(SpecError::WorkingDir(c.working_dir));
    }
    Ok(c)
}

/// Entrypoint then Cmd.
pub fn command(c: &ContainerConfig) -> Vec<String> {
    let mut args = c.entrypoint.clone().unwrap_or_default();
    args.extend(c.cmd.clone().unwrap_or_default());
    args
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// Docker's container environment: PATH, HOSTNAME and (with a tty) TERM,
/// then the merged Env replacing entries of the same key or appended; a
/// bare `KEY` removes KEY.
pub fn environment(config: &ContainerConfig, hostname: &str) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if config.tty {
        env.push("TERM=xterm".into());
    }
    let defaults = env.len();
    let mut removed = vec![false; defaults];
    for value in config.env.iter().flatten() {
        match value.split_once('=') {
            None => {
                if let Some(i) = env[..defaults].iter().position(|e| env_key(e) == value) {
                    removed[i] = true;
                }
            }
            Some((key, _)) => match env[..defaults].iter().position(|e| env_key(e) == key) {
                Some(i) => {
                    env[i] = value.clone();
                    removed[i] = false;
                }
                None => env.push(value.clone()),
            },
        }
    }
    let mut i = 0;
    env.retain(|_| {
        let keep = !removed.get(i).copied().unwrap_or(false);
        i += 1;
        keep
    });
    env
}

/// Whether `--init` applies: asked for, and the container has a pid
/// namespace of its own (another's or the host's already has an init).
pub fn wants_init(hc: &HostConfig, modes: &Modes) -> bool {
    hc.init == Some(true) && modes.pid_private()
}

/// The spec's `process` without capabilities, noNewPrivileges and
/// oomScoreAdj.
pub fn process(
    input: &SpecInput<'_>,
    config: &ContainerConfig,
    hostname: &str,
    modes: &Modes,
) -> Result<Map<String, Value>, SpecError> {
    let hc = input.host_config;
    let mut args = command(config);
    if wants_init(hc, modes) {
        if input.init_path.is_none() {
            return Err(SpecError::NoInitBinary);
        }
        args.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
    }
    let cwd = if config.working_dir.is_empty() {
        "/"
    } else {
        &config.working_dir
    };
    let mut gids = vec![input.user.gid];
    gids.extend(&input.user.additional_gids);
    gids.extend(input.group_add);
    let mut p = Map::new();
    p.insert("terminal".into(), json!(config.tty));
    if let Some([h, w]) = hc.console_size.as_deref() {
        if config.tty && (*h > 0 || *w > 0) {
            p.insert("consoleSize".into(), json!({"height": h, "width": w}));
        }
    }
    p.insert(
        "user".into(),
        json!({"uid": input.user.uid, "gid": input.user.gid, "additionalGids": gids}),
    );
    p.insert("args".into(), json!(args));
    p.insert("env".into(), json!(environment(config, hostname)));
    p.insert("cwd".into(), json!(cwd));
    let rlimits = rlimits(hc)?;
    if !rlimits.is_empty() {
        p.insert("rlimits".into(), Value::Array(rlimits));
    }
    Ok(p)
}

/// The rlimit names `--ulimit` takes.
const ULIMITS: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// `HostConfig.Ulimits` as the spec's rlimits; -1 (Docker's "unlimited")
/// is infinity.
pub fn rlimits(hc: &HostConfig) -> Result<Vec<Value>, SpecError> {
    let mut out = Vec::new();
    for u in hc.ulimits.iter().flatten() {
        let name = u.name.to_ascii_lowercase();
        if !ULIMITS.contains(&name.as_str()) {
            return Err(SpecError::UlimitType(u.name.clone()));
        }
        let value = |v: i64| if v < 0 { u64::MAX } else { v as u64 };
        if value(u.soft) > value(u.hard) {
            return Err(SpecError::UlimitRange {
                soft: u.soft,
                hard: u.hard,
            });
        }
        out.push(json!({
            "type": format!("RLIMIT_{}", name.to_ascii_uppercase()),
            "soft": value(u.soft),
            "hard": value(u.hard),
        }));
    }
    Ok(out)
}

/// `HostConfig.GroupAdd` as gids: numbers as they are, names looked up in
/// the container's `/etc/group` (its text, if it has one).
pub fn group_add_gids(
    group_add: &[String],
    etc_group: Option<&str>,
) -> Result<Vec<u32>, SpecError> {
    let mut gids = Vec::new();
    for g in group_add {
        if let Ok(n) = g.parse::<u32>() {
            gids.push(n);
            continue;
        }
        let found = etc_group.into_iter().flat_map(str::lines).find_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?;
            (name == g).then(|| gid.parse::<u32>().ok()).flatten()
        });
        match found {
            Some(gid) => gids.push(gid),
            None => return Err(SpecError::GroupNotFound(g.clone())),
        }
    }
    Ok(gids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ContainerConfig {
            entrypoint: entrypoint.map(v),
            cmd: cmd.map(v),
            ..Default::default()
        }
    }

    #[test]
    fn entrypoint_and_cmd_follow_dockers_override_rules() {
        let image = cfg(Some(&["/entry"]), Some(&["default"]));
        type Row<'a> = (Option<&'a [&'a str]>, Option<&'a [&'a str]>, &'a [&'a str]);
        let table: &[Row] = &[
            (None, None, &["/entry", "default"]),
            (None, Some(&["mine"]), &["/entry", "mine"]),
            (Some(&["/other"]), None, &["/other"]),
            (Some(&["/other"]), Some(&["x"]), &["/other", "x"]),
            (Some(&[""]), Some(&["sh"]), &["sh"]),
            (Some(&[]), None, &["default"]),
        ];
        for (entry, cmd, want) in table {
            let merged = merge_image_config(&cfg(*entry, *cmd), &image).unwrap();
            assert_eq!(command(&merged), *want, "{entry:?} {cmd:?}");
            let again = merge_image_config(&merged, &image).unwrap();
            assert_eq!(command(&again), *want, "merging twice: {entry:?} {cmd:?}");
        }
        let err = merge_image_config(&cfg(Some(&[""]), None), &image).unwrap_err();
        assert_eq!(err.to_string(), "No command specified");
        let err = merge_image_config(&cfg(None, None), &ContainerConfig::default()).unwrap_err();
        assert_eq!(err, SpecError::NoCommand);
    }

    #[test]
    fn env_merges_image_then_config_then_defaults() {
        let image = ContainerConfig {
            env: Some(vec!["PATH=/img".into(), "A=image".into(), "B=image".into()]),
            ..cfg(None, Some(&["sh"]))
        };
        let mine = ContainerConfig {
            env: Some(vec!["A=mine".into(), "C=mine".into()]),
            tty: true,
            ..Default::default()
        };
        let merged = merge_image_config(&mine, &image).unwrap();
        assert_eq!(
            merged.env.clone().unwrap(),
            ["A=mine", "C=mine", "PATH=/img", "B=image"]
        );
        assert_eq!(
            environment(&merged, "abc"),
            [
                "PATH=/img",
                "HOSTNAME=abc",
                "TERM=xterm",
                "A=mine",
                "C=mine",
                "B=image"
            ]
        );
        let plain = ContainerConfig {
            env: Some(vec!["HOSTNAME".into(), "X=1".into()]),
            ..Default::default()
        };
        assert_eq!(
            environment(&plain, "h"),
            [format!("PATH={DEFAULT_PATH}"), "X=1".to_string()]
        );
    }

    #[test]
    fn user_and_workdir_come_from_the_image_unless_given() {
        let image = ContainerConfig {
            user: "nobody".into(),
            working_dir: "/srv".into(),
            ..cfg(None, Some(&["sh"]))
        };
        let merged = merge_image_config(&ContainerConfig::default(), &image).unwrap();
        assert_eq!(
            (merged.user.as_str(), merged.working_dir.as_str()),
            ("nobody", "/srv")
        );
        let mine = ContainerConfig {
            user: "1:2".into(),
            working_dir: "rel".into(),
            ..Default::default()
        };
        let err = merge_image_config(&mine, &image).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the working directory 'rel' is invalid, it needs to be an absolute path"
        );
    }

    #[test]
    fn ulimits_become_rlimits_with_dockers_checks() {
        let hc = |name: &str, soft, hard| HostConfig {
            ulimits: Some(vec![crate::types::Ulimit {
                name: name.into(),
                soft,
                hard,
            }]),
            ..Default::default()
        };
        let r = rlimits(&hc("nofile", 1024, 2048)).unwrap();
        assert_eq!(
            r,
            [json!({"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048})]
        );
        let r = rlimits(&hc("core", -1, -1)).unwrap();
        assert_eq!(r[0]["soft"], json!(u64::MAX));
        assert_eq!(
            rlimits(&hc("bogus", 1, 1)).unwrap_err().to_string(),
            "invalid ulimit type: bogus"
        );
        assert_eq!(
            rlimits(&hc("nproc", 10, 5)).unwrap_err().to_string(),
            "ulimit soft limit must be less than or equal to hard limit: 10 > 5"
        );
    }

    #[test]
    fn group_add_takes_numbers_and_names() {
        let group = "root:x:0:\naudio:x:29:pulse\nstaff:x:50:\n";
        let names = ["audio".to_string(), "1234".to_string(), "staff".to_string()];
        assert_eq!(group_add_gids(&names, Some(group)).unwrap(), [29, 1234, 50]);
        assert_eq!(
            group_add_gids(&["nope".into()], Some(group))
                .unwrap_err()
                .to_string(),
            "Unable to find group nope: no matching entries in group file"
        );
        assert!(group_add_gids(&["audio".into()], None).is_err());
    }
}
