//! The registry client's configuration: credentials per host and the hosts
//! that may go without verified TLS, from a docker-style `config.json` read
//! by `berth_client::docker_config` (the one reader of that file).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

pub use berth_client::docker_config::Credentials;
use berth_client::docker_config::{normalise_host, DockerConfig, DockerConfigError};

use super::hosts::{Capability, Endpoint, HostsConfig, DEFAULT_HOST_DIR};
use super::RegistryError;

/// Per-host credentials and the hosts that may be reached without verified
/// TLS (loopback hosts always may).
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    auths: BTreeMap<String, Credentials>,
    insecure: BTreeSet<String>,
    /// Mirrors and servers per registry, from a hosts.toml directory.
    hosts: BTreeMap<String, HostsConfig>,
}

impl RegistryConfig {
    /// Reads a docker-style config.json:
    /// `{"auths": {"host:port": {"auth": base64("user:pass")} | {"username", "password"}
    /// | {"identitytoken"}}, "insecure-registries": ["host:port", "10.0.0.0/8", ...]}`.
    /// A missing file is an empty configuration; other keys are ignored.
    pub fn load(path: &Path) -> Result<RegistryConfig, RegistryError> {
        let file = DockerConfig::load(path).map_err(config_error)?;
        let mut config = RegistryConfig::default();
        for (host, entry) in file.auths() {
            if let Some(creds) = entry.credentials() {
                config.auths.insert(host.to_string(), creds);
            }
        }
        for host in file.insecure_registries {
            if host.contains('/') && parse_cidr(&host).is_none() {
                return Err(RegistryError::InvalidConfig {
                    path: path.to_path_buf(),
                    reason: format!(
                        "insecure-registries entry {host:?} is neither host[:port] nor a CIDR"
                    ),
                });
            }
            config.add_insecure(&host);
        }
        Ok(config)
    }

    /// The credentials configured for a registry host (`host[:port]`).
    pub fn credentials(&self, host: &str) -> Option<Credentials> {
        self.auths.get(&normalise_host(host)).cloned()
    }

    /// Sets the credentials for a registry host.
    pub fn set_credentials(&mut self, host: &str, creds: Credentials) {
        self.auths.insert(normalise_host(host), creds);
    }

    /// Marks a host (`host[:port]`) or an IP network (`a.b.c.d/n`) insecure:
    /// TLS is tried without verifying the certificate, then plain HTTP.
    pub fn add_insecure(&mut self, host: &str) {
        let host = host.trim();
        if host.contains('/') && parse_cidr(host).is_some() {
            self.insecure.insert(host.to_string());
        } else {
            self.insecure.insert(normalise_host(host));
        }
    }

    /// Reads a hosts.toml directory (see `hosts`): its endpoints are used
    /// for the registries it names, plain-HTTP and `skip_verify` endpoints
    /// become insecure hosts.
    pub fn load_hosts_dir(&mut self, dir: &Path) -> Result<(), RegistryError> {
        self.set_hosts(super::hosts::load_dir(dir)?);
        Ok(())
    }

    /// Sets the endpoints per registry (`_default`: for the others).
    pub fn set_hosts(&mut self, hosts: BTreeMap<String, HostsConfig>) {
        for e in hosts.values().flat_map(|h| &h.endpoints) {
            if e.plain_http || e.skip_verify {
                self.add_insecure(&e.authority);
            }
        }
        self.hosts = hosts;
    }

    /// Where a request for `registry` needing `need` goes, in the order
    /// to try: the configured endpoints that may, and `None` for the
    /// registry itself (last, unless a `server` line replaces it).
    pub fn endpoints(&self, registry: &str, need: Capability) -> Vec<Option<&Endpoint>> {
        let hosts = self
            .hosts
            .get(&normalise_host(registry))
            .or_else(|| self.hosts.get(DEFAULT_HOST_DIR));
        let Some(hosts) = hosts else {
            return vec![None];
        };
        let mut out: Vec<Option<&Endpoint>> = hosts
            .endpoints
            .iter()
            .filter(|e| e.can(need))
            .map(Some)
            .collect();
        if !hosts.has_server || out.is_empty() {
            out.push(None);
        }
        out
    }

    /// Every endpoint configured with CA files.
    pub fn endpoints_with_ca(&self) -> impl Iterator<Item = &Endpoint> {
        self.hosts
            .values()
            .flat_map(|h| &h.endpoints)
            .filter(|e| !e.ca.is_empty())
    }

    /// Whether a host is listed as insecure (by name or by network).
    pub fn is_insecure(&self, host: &str) -> bool {
        let host = normalise_host(host);
        if self.insecure.contains(&host) {
            return true;
        }
        match host_ip(&host) {
            Some(ip) => self
                .insecure
                .iter()
                .filter_map(|entry| parse_cidr(entry))
                .any(|(net, bits)| cidr_contains(net, bits, ip)),
            None => false,
        }
    }

    /// Whether a host may be reached over plain HTTP or unverified TLS:
    /// loopback hosts and insecure ones. Every other host gets verified HTTPS.
    pub fn allows_insecure(&self, host: &str) -> bool {
        is_loopback(host) || self.is_insecure(host)
    }
}

/// A docker config that cannot be read or used, as a registry error.
fn config_error(e: DockerConfigError) -> RegistryError {
    match e {
        DockerConfigError::Read { path, source } => RegistryError::ReadConfig { path, source },
        DockerConfigError::Parse { path, source } => RegistryError::InvalidConfig {
            path,
            reason: source.to_string(),
        },
        DockerConfigError::Entry { path, problem } => RegistryError::InvalidConfig {
            path,
            reason: problem.to_string(),
        },
    }
}

/// The host part of `host[:port]`, brackets removed from IPv6 addresses.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // More than one ':' without brackets: a bare IPv6 address.
        Some((h, _)) if !h.contains(':') => h,
        _ => host,
    }
}

fn host_ip(host: &str) -> Option<IpAddr> {
    strip_port(host).parse().ok()
}

/// `localhost`, 127.0.0.0/8 and ::1, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = strip_port(host);
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((addr, bits))
}

fn cidr_contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.to_string(),
            password: p.to_string(),
        }
    }

    #[test]
    fn loads_every_kind_of_entry() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with:colons");
        let (_dir, path) = write_config(&format!(
            r#"{{
                "auths": {{
                    "reg.example:5000": {{"auth": "{auth}"}},
                    "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}},
                    "ghcr.io": {{"auth": "{auth}", "identitytoken": "refresh-me"}},
                    "helper.example": {{}}
                }},
                "credsStore": "desktop",
                "insecure-registries": ["reg.example:5000", "10.1.0.0/16"]
            }}"#
        ));
        let config = RegistryConfig::load(&path).unwrap();
        assert_eq!(
            config.credentials("reg.example:5000"),
            Some(basic("alice", "s3cret:with:colons"))
        );
        assert_eq!(config.credentials("docker.io"), Some(basic("bob", "pw")));
        assert_eq!(
            config.credentials("registry-1.docker.io"),
            Some(basic("bob", "pw"))
        );
        assert_eq!(
            config.credentials("GHCR.io"),
            Some(Credentials::IdentityToken("refresh-me".to_string()))
        );
        assert_eq!(config.credentials("helper.example"), None);
        assert_eq!(config.credentials("reg.example"), None);

        assert!(config.is_insecure("reg.example:5000"));
        assert!(!config.is_insecure("reg.example:5001"));
        assert!(config.is_insecure("10.1.2.3:443"));
        assert!(config.is_insecure("10.1.2.3"));
        assert!(!config.is_insecure("10.2.0.1"));
        assert!(!config.is_insecure("example.com"));
    }

    #[test]
    fn missing_file_is_empty_and_bad_files_name_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let config = RegistryConfig::load(&dir.path().join("nope.json")).unwrap();
        assert_eq!(config.credentials("docker.io"), None);

        let (_dir, path) = write_config("{ \"auths\": [1, 2] }");
        let err = RegistryConfig::load(&path).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidConfig { .. }));
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");

        let (_dir, path) = write_config(r#"{"auths": {"h": {"auth": "!!!"}}}"#);
        let msg = RegistryConfig::load(&path).unwrap_err().to_string();
        assert!(msg.contains("not base64"), "{msg}");

        let no_colon = base64::engine::general_purpose::STANDARD.encode("alice");
        let (_dir, path) = write_config(&format!(
            r#"{{"auths": {{"h": {{"auth": "{no_colon}"}}}}}}"#
        ));
        let msg = RegistryConfig::load(&path).unwrap_err().to_string();
        assert!(msg.contains("username:password"), "{msg}");

        let (_dir, path) = write_config(r#"{"insecure-registries": ["10.0.0.0/99"]}"#);
        assert!(RegistryConfig::load(&path).is_err());
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.9.9.9:80",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
        let config = RegistryConfig::default();
        assert!(config.allows_insecure("127.0.0.1:5000"));
        assert!(!config.allows_insecure("registry.example:5000"));
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let text = format!(
            "{:?} {:?}",
            basic("u", "hunter2"),
            Credentials::IdentityToken("tok".into())
        );
        assert!(
            !text.contains("hunter2") && !text.contains("tok\""),
            "{text}"
        );
    }
}
