//! A pod's files: `hostname`, `hosts` and `resolv.conf` in its directory
//! (its containers mount them), and its `/dev/shm` tmpfs.

use std::path::Path;

use berth_proto::cri::v1 as cri;

use super::spec::NamespaceModes;
use super::{blocking, files_err, sandbox_dirs, SandboxError};
use crate::cri::store::SandboxRecord;
use crate::cri::Cri;

/// The pod's resolv.conf: its DNS config, else the host's.
pub(super) fn resolv_conf(config: &cri::PodSandboxConfig) -> String {
    match &config.dns_config {
        Some(dns)
            if !(dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty()) =>
        {
            let mut text = String::new();
            if !dns.searches.is_empty() {
                text.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            for server in &dns.servers {
                text.push_str(&format!("nameserver {server}\n"));
            }
            if !dns.options.is_empty() {
                text.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
            text
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}

/// Checks what a resolv.conf would be made of: no line breaks or NULs.
pub(super) fn check_dns(config: &cri::PodSandboxConfig) -> Result<(), SandboxError> {
    let Some(dns) = &config.dns_config else {
        return Ok(());
    };
    for item in dns.servers.iter().chain(&dns.searches).chain(&dns.options) {
        if item.is_empty() || item.contains(['\n', '\r', '\0', ' ', '\t']) {
            return Err(SandboxError::InvalidConfig(format!(
                "dns config entry {item:?}: want a word without spaces or line breaks"
            )));
        }
    }
    Ok(())
}

/// Writes the pod's hostname, hosts and resolv.conf into `dir`.
pub(super) fn write_pod_files(
    dir: &Path,
    config: &cri::PodSandboxConfig,
    modes: NamespaceModes,
) -> Result<(), SandboxError> {
    std::fs::create_dir_all(dir).map_err(files_err("create", dir))?;
    let hostname = if config.hostname.is_empty() {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
    } else {
        config.hostname.clone()
    };
    let hosts = if modes.host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".to_string()
    };
    for (name, text) in [
        ("hostname", format!("{hostname}\n")),
        ("hosts", hosts),
        ("resolv.conf", resolv_conf(config)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(files_err("write", &path))?;
    }
    Ok(())
}

/// Mounts the pod's /dev/shm: a 64 MiB tmpfs, as Docker and containerd
/// give one.
pub(super) fn mount_shm(path: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(path).map_err(files_err("create", path))?;
    use nix::mount::{mount, MsFlags};
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|source| SandboxError::Shm {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn unmount(path: &Path) {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "unmount"),
    }
}

/// Removes the pod's files and its state directory (shm unmounted).
pub(super) async fn remove_files(
    cri: &Cri,
    id: &str,
    record: &SandboxRecord,
) -> Result<(), SandboxError> {
    let (_, state) = sandbox_dirs(cri, id);
    let dir = record.dir.clone();
    let shm = record.shm.clone();
    blocking(move || {
        if let Some(shm) = &shm {
            unmount(shm);
        }
        for d in [&dir, &state] {
            match std::fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(files_err("remove", d)(e)),
            }
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_comes_from_the_dns_config() {
        let mut c = cri::PodSandboxConfig {
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.0.0.10".into(), "10.0.0.11".into()],
                searches: vec![
                    "default.svc.cluster.local".into(),
                    "svc.cluster.local".into(),
                ],
                options: vec!["ndots:5".into()],
            }),
            ..Default::default()
        };
        assert_eq!(
            resolv_conf(&c),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5\n"
        );
        check_dns(&c).unwrap();
        c.dns_config
            .as_mut()
            .unwrap()
            .options
            .push("a\nnameserver 1.1.1.1".into());
        assert!(check_dns(&c).is_err());
    }
}
