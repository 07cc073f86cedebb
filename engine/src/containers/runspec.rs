//! The spec a container is created with: its user resolved, the files the
//! engine writes for it (hostname, hosts, resolv.conf), the pids of the
//! containers whose namespaces it joins, and [`super::spec::build`].

use std::path::{Path, PathBuf};

use super::record::ContainerRecord;
use super::spec::{self, NetworkFiles, Peers, ResolvedUser, SpecInput, SystemHost};
use super::{ContainerError, Result};
use crate::images::Image;
use crate::Engine;

/// The init binary `--init` mounts: `docker-init` (tini, from Debian's
/// docker.io) on PATH, as dockerd finds its own.
pub fn default_init_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join("docker-init"))
        .find(|p| p.is_file())
}

/// `uid[:gid]` in numbers, or names looked up in the image's passwd and
/// group files.
fn resolve_user(user: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ResolvedUser> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |file: Option<&str>, name: &str| -> Option<(u32, u32)> {
        file?.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 4 && f[0] == name)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    };
    let (uid, mut gid) = if u.is_empty() {
        (0, 0)
    } else if let Ok(uid) = u.parse::<u32>() {
        // A uid's primary group is its passwd entry's, else 0.
        let gid = passwd
            .and_then(|p| {
                p.lines().find_map(|line| {
                    let f: Vec<&str> = line.split(':').collect();
                    (f.len() >= 4 && f[2] == u).then(|| f[3].parse().ok())?
                })
            })
            .unwrap_or(0);
        (uid, gid)
    } else {
        lookup(passwd, u).ok_or_else(|| {
            ContainerError::InvalidConfig(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ))
        })?
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .and_then(|file| {
                    file.lines().find_map(|line| {
                        let f: Vec<&str> = line.split(':').collect();
                        (f.len() >= 3 && f[0] == g).then(|| f[2].parse().ok())?
                    })
                })
                .ok_or_else(|| {
                    ContainerError::InvalidConfig(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    // The user's supplementary groups: every group that lists the user.
    let name = if u.parse::<u32>().is_ok() {
        None
    } else {
        Some(u)
    };
    let mut additional: Vec<u32> = match (group, name) {
        (Some(group), Some(name)) if g.is_none() => group
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 4 && f[3].split(',').any(|m| m == name)).then(|| f[2].parse().ok())?
            })
            .filter(|&id| id != gid)
            .collect(),
        _ => Vec::new(),
    };
    additional.sort_unstable();
    additional.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
    })
}

/// Writes the container's hostname, hosts and resolv.conf files.
fn write_files(dir: &Path, record: &ContainerRecord) -> Result<NetworkFiles> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContainerError::Io {
            what: "write",
            path,
            source,
        }
    };
    let hc = &record.host_config;
    let host_mode = hc.network_mode == "host";
    let hostname_path = dir.join("hostname");
    let hostname = if host_mode {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        record.config.hostname.clone()
    };
    std::fs::write(&hostname_path, format!("{hostname}\n")).map_err(io(&hostname_path))?;
    let hosts_path = dir.join("hosts");
    let mut hosts = if host_mode {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::\tip6-localnet\n\
         ff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
            .to_string()
    };
    for entry in hc.extra_hosts.iter().flatten() {
        // `name:ip` (Docker also takes `name=ip`).
        if let Some((name, ip)) = entry.split_once('=').or_else(|| entry.split_once(':')) {
            hosts.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    std::fs::write(&hosts_path, hosts).map_err(io(&hosts_path))?;
    let resolv_path = dir.join("resolv.conf");
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = if host_mode {
        host_resolv
    } else {
        container_resolv_conf(&host_resolv, record)
    };
    std::fs::write(&resolv_path, resolv).map_err(io(&resolv_path))?;
    Ok(NetworkFiles {
        resolv_conf: Some(resolv_path),
        hostname: Some(hostname_path),
        hosts: Some(hosts_path),
    })
}

/// The host's resolv.conf without loopback name servers (they mean nothing
/// in the container's network namespace), with `--dns`, `--dns-search`
/// and `--dns-option` in place of the host's when given.
pub fn container_resolv_conf(host: &str, record: &ContainerRecord) -> String {
    let hc = &record.host_config;
    let mut out = String::new();
    let given = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let loopback = words
                    .next()
                    .is_some_and(|ip| ip.starts_with("127.") || ip == "::1");
                if !loopback && !given(&hc.dns) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            Some("search") | Some("domain") if given(&hc.dns_search) => {}
            Some("options") if given(&hc.dns_options) => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for ns in hc.dns.iter().flatten() {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if given(&hc.dns_search) {
        out.push_str(&format!(
            "search {}\n",
            hc.dns_search
                .iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if given(&hc.dns_options) {
        out.push_str(&format!(
            "options {}\n",
            hc.dns_options
                .iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    out
}

/// The pid of a running container a `container:ID` mode names.
fn peer_pid(engine: &Engine, mode: &str) -> Option<u32> {
    let target = mode.strip_prefix("container:")?;
    let c = engine.containers.get(target).ok()?;
    let r = c.record();
    r.state.status.is_running().then_some(r.state.pid)
}

/// The container's spec (JSON); creates the missing sources of `-v` binds.
pub async fn container_spec(
    engine: &Engine,
    record: &ContainerRecord,
    image: &Image,
) -> Result<Vec<u8>> {
    let dir = engine.paths.container_dir(&record.id);
    let files = write_files(&dir, record)?;
    let passwd = crate::images::read_file(engine, image, "/etc/passwd")
        .await
        .ok()
        .flatten();
    let group = crate::images::read_file(engine, image, "/etc/group")
        .await
        .ok()
        .flatten();
    let passwd = passwd.map(|b| String::from_utf8_lossy(&b).into_owned());
    let group = group.map(|b| String::from_utf8_lossy(&b).into_owned());
    let user = resolve_user(&record.config.user, passwd.as_deref(), group.as_deref())?;
    let group_add = spec::group_add_gids(
        record.host_config.group_add.as_deref().unwrap_or(&[]),
        group.as_deref(),
    )?;
    let hc = &record.host_config;
    let peers = Peers {
        pid: peer_pid(engine, &hc.pid_mode),
        ipc: peer_pid(engine, &hc.ipc_mode),
        net: peer_pid(engine, &hc.network_mode),
    };
    let init = default_init_path();
    let input = SpecInput {
        id: &record.id,
        config: &record.config,
        host_config: hc,
        image: &image.config,
        user: &user,
        group_add: &group_add,
        files: &files,
        peers: &peers,
        init_path: init.as_deref(),
    };
    let built = spec::build(&input, &SystemHost)?;
    for source in &built.missing_bind_sources {
        std::fs::create_dir_all(source).map_err(|e| ContainerError::Io {
            what: "create bind source",
            path: source.clone(),
            source: e,
        })?;
    }
    serde_json::to_vec(&built.spec)
        .map_err(|e| ContainerError::InvalidConfig(format!("encode the spec: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1000::/app:/bin/sh\n";
        let group = "root:x:0:\nwheel:x:10:root,app\nstaff:x:50:app\napp:x:1000:\n";
        let r = resolve_user("", Some(passwd), Some(group)).unwrap();
        assert_eq!((r.uid, r.gid), (0, 0));
        let r = resolve_user("app", Some(passwd), Some(group)).unwrap();
        assert_eq!(
            (r.uid, r.gid, r.additional_gids.clone()),
            (1000, 1000, vec![10, 50])
        );
        let r = resolve_user("1000:50", None, None).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 50));
        let r = resolve_user("nobody:staff", Some(passwd), Some(group)).unwrap();
        assert_eq!((r.uid, r.gid), (65534, 50));
        assert!(resolve_user("ghost", Some(passwd), Some(group)).is_err());
        assert!(resolve_user("ghost", None, None).is_err());
    }
}
