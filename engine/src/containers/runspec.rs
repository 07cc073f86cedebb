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

/// What can be known of a user without the container's files: `uid[:gid]`
/// in numbers (a name counts as root until it is resolved).
pub fn provisional_user(user: &str) -> ResolvedUser {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    ResolvedUser {
        uid: u.parse().unwrap_or(0),
        gid: g.parse().unwrap_or(0),
        additional_gids: Vec::new(),
    }
}

/// Whether the user or the extra groups name something only the
/// container's `/etc/passwd` and `/etc/group` can resolve (a uid's primary
/// group among them).
pub fn needs_resolution(record: &ContainerRecord) -> bool {
    let user = &record.config.user;
    let numeric_pair = user
        .split_once(':')
        .is_some_and(|(u, g)| u.parse::<u32>().is_ok() && g.parse::<u32>().is_ok());
    (!user.is_empty() && !numeric_pair)
        || record
            .host_config
            .group_add
            .iter()
            .flatten()
            .any(|g| g.parse::<u32>().is_err())
}

/// Resolves the user and the extra groups in the container's snapshot.
pub async fn resolve_user(
    engine: &Engine,
    record: &ContainerRecord,
) -> Result<(ResolvedUser, Vec<u32>)> {
    let sup = &engine.supervisor;
    let invalid = |e: crate::backend::BackendError| match e {
        crate::backend::BackendError::InvalidArgument(m)
        | crate::backend::BackendError::NotFound(m) => ContainerError::InvalidConfig(m),
        other => ContainerError::Backend {
            what: "resolve the user".into(),
            source: other,
        },
    };
    let user = if record.config.user.is_empty() {
        ResolvedUser::default()
    } else {
        let (uid, gid, additional_gids) = sup
            .resolve_user(&record.id, &record.config.user)
            .await
            .map_err(invalid)?;
        ResolvedUser {
            uid,
            gid,
            additional_gids,
        }
    };
    let mut groups = Vec::new();
    for g in record.host_config.group_add.iter().flatten() {
        let gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                sup.resolve_user(&record.id, &format!("0:{g}"))
                    .await
                    .map_err(invalid)?
                    .1
            }
        };
        groups.push(gid);
    }
    Ok((user, groups))
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

/// Names the network namespace the engine makes at start (see
/// `crate::network::endpoints`) in the spec's private network namespace.
fn set_netns_path(spec: &mut serde_json::Value, path: &Path) {
    let namespaces = spec
        .pointer_mut("/linux/namespaces")
        .and_then(|n| n.as_array_mut());
    for ns in namespaces.into_iter().flatten() {
        if ns.get("type").and_then(|t| t.as_str()) == Some("network") && ns.get("path").is_none() {
            ns["path"] = serde_json::json!(path);
        }
    }
}

/// The pid of a running container a `container:ID` mode names.
fn peer_pid(engine: &Engine, mode: &str) -> Option<u32> {
    let target = mode.strip_prefix("container:")?;
    let c = engine.containers.get(target).ok()?;
    let r = c.record();
    r.state.status.is_running().then_some(r.state.pid)
}

/// The container's spec (JSON); creates the missing sources of `-v` binds.
pub fn container_spec(engine: &Engine, record: &ContainerRecord, image: &Image) -> Result<Vec<u8>> {
    let dir = engine.paths.container_dir(&record.id);
    let files = write_files(&dir, record)?;
    let volume_binds = crate::volumes::mounts::spec_host_config(record);
    let hc = &volume_binds;
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
        user: &record.user,
        group_add: &record.group_add,
        files: &files,
        peers: &peers,
        init_path: init.as_deref(),
    };
    let mut built = spec::build(&input, &SystemHost)?;
    if let Some(path) = engine.networks.netns_path(&record.id, &hc.network_mode) {
        set_netns_path(&mut built.spec, &path);
    }
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
    fn users_known_without_files() {
        assert_eq!(
            provisional_user("1000:50"),
            ResolvedUser {
                uid: 1000,
                gid: 50,
                additional_gids: vec![]
            }
        );
        assert_eq!(provisional_user(""), ResolvedUser::default());
    }
}
