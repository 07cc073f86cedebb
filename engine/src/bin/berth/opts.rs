//! The flags of `run` and `create`, and their translation into the body of
//! `POST /containers/create` as the docker CLI builds it: `-e`,
//! `--env-file`, `-p`, `-v`, `--mount`, `--tmpfs`, `--memory`, `--cpus`,
//! `--log-opt` and the rest.

use std::collections::BTreeMap;
use std::path::Path;

use berth_engine::types::{ContainerConfig, CreateRequest, HostConfig, LogConfig, Mount};
use berth_engine::types::{RestartPolicy, TmpfsOptions};
use clap::Args;
use serde_json::{json, Value};

use crate::output::units;

#[derive(Debug, thiserror::Error)]
pub enum OptsError {
    #[error("invalid argument {value:?} for \"{flag}\" flag: {problem}")]
    Flag {
        value: String,
        flag: &'static str,
        problem: String,
    },
    #[error("open {path}: {source}")]
    EnvFile {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid restart policy format: maximum retry count must be an integer")]
    RestartCount,
    #[error("conflicting options: cannot specify both --restart and --rm")]
    RestartAndRm,
    #[error("invalid publish opts format (should be name=value but got '{0}')")]
    Publish(String),
    #[error("--no-healthcheck conflicts with --health-* options")]
    NoHealthcheckConflict,
    #[error("--{0} cannot be negative")]
    HealthNegative(&'static str),
}

pub(crate) fn flag_error(value: &str, flag: &'static str, problem: impl Into<String>) -> OptsError {
    OptsError::Flag {
        value: value.to_string(),
        flag,
        problem: problem.into(),
    }
}

/// The flags `run` and `create` share.
#[derive(Args, Debug, Default, Clone)]
pub struct ContainerOpts {
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Automatically remove the container and its associated anonymous volumes when it exits
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<String>,
    /// Bind mount a volume
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Mount volumes from the specified container(s)
    #[arg(long = "volumes-from")]
    pub volumes_from: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Memory limit
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: '-1' to enable unlimited swap
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Add Linux capabilities
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Set meta data on a container
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Connect a container to a network
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    pub ip: Option<String>,
    /// IPv6 address (e.g., 2001:db8::33)
    #[arg(long)]
    pub ip6: Option<String>,
    /// Container MAC address (e.g., 92:d0:c6:0a:29:33)
    #[arg(long = "mac-address")]
    pub mac_address: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// Add link to another container
    #[arg(long)]
    pub link: Vec<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option", alias = "dns-opt")]
    pub dns_option: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Pull image before running ("always", "missing", "never")
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Logging driver for the container
    #[arg(long = "log-driver")]
    pub log_driver: Option<String>,
    /// Log driver options
    #[arg(long = "log-opt")]
    pub log_opt: Vec<String>,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Restart policy to apply when a container exits
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<i64>,
    /// Security Options
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Command to run to check health
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 0s)
    #[arg(long = "health-interval", allow_hyphen_values = true)]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 0s)
    #[arg(long = "health-timeout", allow_hyphen_values = true)]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries", allow_hyphen_values = true)]
    pub health_retries: Option<i64>,
    /// Start period for the container to initialize before starting health-retries countdown (ms|s|m|h) (default 0s)
    #[arg(long = "health-start-period", allow_hyphen_values = true)]
    pub health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h) (default 0s)
    #[arg(long = "health-start-interval", allow_hyphen_values = true)]
    pub health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// The image, then the command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [COMMAND] [ARG...]"
    )]
    pub args: Vec<String>,
}

impl ContainerOpts {
    pub fn image(&self) -> &str {
        self.args.first().map_or("", String::as_str)
    }

    /// The create request; `attach` says whether the client attaches
    /// (`run` without `-d`; `create` always, as docker sets it).
    pub fn to_request(&self, attach: bool) -> Result<CreateRequest, OptsError> {
        let mut config = ContainerConfig {
            image: self.image().to_string(),
            tty: self.tty,
            open_stdin: self.interactive,
            attach_stdin: attach && self.interactive,
            attach_stdout: attach,
            attach_stderr: attach,
            stdin_once: attach && self.interactive,
            hostname: self.hostname.clone().unwrap_or_default(),
            user: self.user.clone().unwrap_or_default(),
            working_dir: self.workdir.clone().unwrap_or_default(),
            stop_signal: self.stop_signal.clone(),
            stop_timeout: self.stop_timeout,
            ..ContainerConfig::default()
        };
        let cmd: Vec<String> = self.args.iter().skip(1).cloned().collect();
        config.cmd = (!cmd.is_empty()).then_some(cmd);
        config.entrypoint = match self.entrypoint.as_deref() {
            None => None,
            Some("") => Some(vec![String::new()]),
            Some(e) => Some(vec![e.to_string()]),
        };
        let mut env = Vec::new();
        for file in &self.env_file {
            env.extend(parse_env_file(Path::new(file))?);
        }
        env.extend(self.env.iter().map(|e| resolve_env(e)));
        config.env = Some(env);
        config.labels = Some(parse_labels(&self.label));
        config.healthcheck = self.healthcheck()?;

        if self.rm && !matches!(self.restart.as_str(), "no" | "") {
            return Err(OptsError::RestartAndRm);
        }
        let mut host = HostConfig {
            auto_remove: self.rm,
            readonly_rootfs: self.read_only,
            privileged: self.privileged,
            network_mode: self.network.clone().unwrap_or_else(|| "default".into()),
            cap_add: (!self.cap_add.is_empty()).then(|| self.cap_add.clone()),
            cap_drop: (!self.cap_drop.is_empty()).then(|| self.cap_drop.clone()),
            security_opt: (!self.security_opt.is_empty()).then(|| self.security_opt.clone()),
            init: self.init.then_some(true),
            restart_policy: parse_restart(&self.restart)?,
            ..HostConfig::default()
        };
        if let Some(m) = &self.memory {
            host.memory = parse_memory(m, "-m, --memory")?;
        }
        if let Some(m) = &self.memory_swap {
            host.memory_swap = if m == "-1" {
                -1
            } else {
                parse_memory(m, "--memory-swap")?
            };
        }
        if let Some(c) = &self.cpus {
            host.nano_cpus = parse_cpus(c)?;
        }
        host.log_config = LogConfig {
            kind: self.log_driver.clone().unwrap_or_default(),
            config: parse_log_opts(&self.log_opt)?,
        };
        let mut binds = Vec::new();
        let mut volumes = BTreeMap::new();
        for v in &self.volume {
            match parse_volume(v) {
                VolumeSpec::Bind(b) => binds.push(b),
                VolumeSpec::Anonymous(path) => {
                    volumes.insert(path, json!({}));
                }
            }
        }
        host.binds = (!binds.is_empty()).then_some(binds);
        config.volumes = (!volumes.is_empty()).then_some(volumes);
        let mounts = self
            .mount
            .iter()
            .map(|m| parse_mount(m))
            .collect::<Result<Vec<_>, _>>()?;
        host.mounts = (!mounts.is_empty()).then_some(mounts);
        host.volumes_from = (!self.volumes_from.is_empty()).then(|| self.volumes_from.clone());
        let mut tmpfs = BTreeMap::new();
        for t in &self.tmpfs {
            let (path, opts) = t.split_once(':').unwrap_or((t, ""));
            tmpfs.insert(path.to_string(), opts.to_string());
        }
        host.tmpfs = (!tmpfs.is_empty()).then_some(tmpfs);
        let (exposed, bindings) = parse_publish(&self.publish)?;
        config.exposed_ports = (!exposed.is_empty()).then_some(exposed);
        host.port_bindings = Some(bindings);
        host.publish_all_ports = self.publish_all;
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        host.dns = some(&self.dns);
        host.dns_search = some(&self.dns_search);
        host.dns_options = some(&self.dns_option);
        host.extra_hosts = some(&self.add_host);
        host.links = some(&self.link);
        let networking_config = network_endpoint(
            &host.network_mode,
            self.ip.as_deref(),
            self.ip6.as_deref(),
            self.mac_address.as_deref(),
            &self.network_alias,
        );
        Ok(CreateRequest {
            config,
            host_config: host,
            networking_config,
        })
    }
}

/// `--ip`, `--ip6`, `--mac-address` and `--network-alias` as the docker
/// CLI sends them: the settings of the endpoint on the `--network`.
fn network_endpoint(
    mode: &str,
    ip: Option<&str>,
    ip6: Option<&str>,
    mac: Option<&str>,
    aliases: &[String],
) -> Option<berth_engine::types::NetworkingConfig> {
    if ip.is_none() && ip6.is_none() && mac.is_none() && aliases.is_empty() {
        return None;
    }
    let mut ipam = serde_json::Map::new();
    if let Some(ip) = ip {
        ipam.insert("IPv4Address".into(), json!(ip));
    }
    if let Some(ip) = ip6 {
        ipam.insert("IPv6Address".into(), json!(ip));
    }
    let settings = berth_engine::types::EndpointSettings {
        ipam_config: (!ipam.is_empty()).then_some(serde_json::Value::Object(ipam)),
        aliases: (!aliases.is_empty()).then(|| aliases.to_vec()),
        mac_address: mac.unwrap_or_default().to_string(),
        ..Default::default()
    };
    Some(berth_engine::types::NetworkingConfig {
        endpoints_config: Some(BTreeMap::from([(mode.to_string(), settings)])),
    })
}

/// `-e NAME` takes NAME's value from our environment when it has one.
pub fn resolve_env(e: &str) -> String {
    if e.contains('=') {
        return e.to_string();
    }
    match std::env::var(e) {
        Ok(v) => format!("{e}={v}"),
        Err(_) => e.to_string(),
    }
}

/// docker's `--env-file`: `NAME=value` lines (the value as written),
/// `NAME` alone taken from our environment (left out when unset), blank
/// lines and `#` comments skipped.
pub fn parse_env_file(path: &Path) -> Result<Vec<String>, OptsError> {
    let text = std::fs::read_to_string(path).map_err(|source| OptsError::EnvFile {
        path: path.display().to_string(),
        source,
    })?;
    parse_env_lines(&text, path)
}

fn parse_env_lines(text: &str, path: &Path) -> Result<Vec<String>, OptsError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = match line.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (line, None),
        };
        if name.is_empty() {
            return Err(flag_error(line, "--env-file", "no variable name"));
        }
        if name.contains(char::is_whitespace) {
            return Err(flag_error(
                &path.display().to_string(),
                "--env-file",
                format!("variable '{name}' contains whitespaces"),
            ));
        }
        match value {
            Some(v) => out.push(format!("{name}={v}")),
            None => {
                if let Ok(v) = std::env::var(name) {
                    out.push(format!("{name}={v}"));
                }
            }
        }
    }
    Ok(out)
}

/// `-l k=v` and `-l k` (an empty value).
pub fn parse_labels(labels: &[String]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

pub fn parse_memory(value: &str, flag: &'static str) -> Result<i64, OptsError> {
    units::ram_in_bytes(value)
        .ok_or_else(|| flag_error(value, flag, format!("invalid size: '{value}'")))
}

/// `--cpus 1.5` as NanoCpus.
pub fn parse_cpus(value: &str) -> Result<i64, OptsError> {
    let bad = || {
        flag_error(
            value,
            "--cpus",
            format!("failed to parse {value} as a rational number"),
        )
    };
    let cpus: f64 = value.parse().map_err(|_| bad())?;
    if !cpus.is_finite() || cpus < 0.0 {
        return Err(bad());
    }
    let nanos = cpus * 1e9;
    if nanos.fract() != 0.0 {
        return Err(flag_error(value, "--cpus", "value is too precise"));
    }
    Ok(nanos as i64)
}

/// `--log-opt key=value` (`key` alone is an empty value; the daemon
/// judges the keys, as with docker).
pub fn parse_log_opts(opts: &[String]) -> Result<BTreeMap<String, String>, OptsError> {
    Ok(opts
        .iter()
        .map(|o| match o.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (o.clone(), String::new()),
        })
        .collect())
}

pub fn parse_restart(value: &str) -> Result<RestartPolicy, OptsError> {
    // The daemon judges the policy's name, as with docker; only the count
    // is read here.
    let (name, count) = value.split_once(':').unwrap_or((value, ""));
    let maximum_retry_count = if count.is_empty() {
        0
    } else {
        count.parse().map_err(|_| OptsError::RestartCount)?
    };
    Ok(RestartPolicy {
        name: name.to_string(),
        maximum_retry_count,
    })
}

#[derive(Debug, PartialEq)]
pub enum VolumeSpec {
    /// `SOURCE:TARGET[:MODE]`, sent as a bind as written.
    Bind(String),
    /// `TARGET` alone: an anonymous volume.
    Anonymous(String),
}

/// `-v`: a lone absolute path is an anonymous volume; anything else goes
/// to the daemon as a bind, which it judges (as with docker).
pub fn parse_volume(spec: &str) -> VolumeSpec {
    if spec.starts_with('/') && !spec.contains(':') {
        VolumeSpec::Anonymous(spec.to_string())
    } else {
        VolumeSpec::Bind(spec.to_string())
    }
}

/// `--mount type=bind,source=/a,target=/b,readonly` (csv of key=value).
pub fn parse_mount(spec: &str) -> Result<Mount, OptsError> {
    let bad = |problem: String| flag_error(spec, "--mount", problem);
    let mut mount = Mount {
        kind: "volume".into(),
        ..Mount::default()
    };
    let mut tmpfs = TmpfsOptions::default();
    let mut bind = serde_json::Map::new();
    let mut volume = serde_json::Map::new();
    for field in spec.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let bool_value = || match value {
            None | Some("1") | Some("true") => Ok(true),
            Some("0") | Some("false") => Ok(false),
            Some(v) => Err(bad(format!("invalid value for {key}: {v}"))),
        };
        match key.as_str() {
            "readonly" | "ro" => {
                mount.read_only = bool_value()?;
                continue;
            }
            "volume-nocopy" => {
                volume.insert("NoCopy".into(), Value::Bool(bool_value()?));
                continue;
            }
            _ => {}
        }
        let Some(value) = value else {
            return Err(bad(format!(
                "invalid field '{field}' must be a key=value pair"
            )));
        };
        match key.as_str() {
            "type" => mount.kind = value.to_string(),
            "source" | "src" => mount.source = value.to_string(),
            "target" | "dst" | "destination" => mount.target = value.to_string(),
            "bind-propagation" => {
                bind.insert("Propagation".into(), Value::String(value.into()));
            }
            "consistency" => mount.consistency = value.to_string(),
            "volume-subpath" => {
                volume.insert("Subpath".into(), Value::String(value.into()));
            }
            "volume-driver" => {
                let driver = volume.entry("DriverConfig").or_insert_with(|| json!({}));
                driver["Name"] = Value::String(value.into());
            }
            "volume-opt" | "volume-label" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| bad(format!("invalid value for {key}: {value}")))?;
                let slot = if key == "volume-opt" {
                    let driver = volume.entry("DriverConfig").or_insert_with(|| json!({}));
                    &mut driver["Options"]
                } else {
                    volume.entry("Labels").or_insert_with(|| json!({}))
                };
                if !slot.is_object() {
                    *slot = json!({});
                }
                slot[k] = Value::String(v.into());
            }
            "tmpfs-size" => {
                tmpfs.size_bytes = Some(
                    units::ram_in_bytes(value)
                        .ok_or_else(|| bad(format!("invalid value for {key}: {value}")))?,
                );
            }
            "tmpfs-mode" => {
                tmpfs.mode = Some(
                    u32::from_str_radix(value, 8)
                        .map_err(|_| bad(format!("invalid value for {key}: {value}")))?,
                );
            }
            _ => return Err(bad(format!("unexpected key '{key}' in '{field}'"))),
        }
    }
    if mount.target.is_empty() {
        return Err(bad("target is required".into()));
    }
    if !["bind", "volume", "tmpfs", "npipe", "cluster", "image"].contains(&mount.kind.as_str()) {
        return Err(bad(format!("invalid mount type: {:?}", mount.kind)));
    }
    if mount.kind == "tmpfs" && (tmpfs.size_bytes.is_some() || tmpfs.mode.is_some()) {
        mount.tmpfs_options = Some(tmpfs);
    }
    if !bind.is_empty() {
        mount.bind_options = Some(Value::Object(bind));
    }
    if !volume.is_empty() {
        if mount.kind != "volume" {
            return Err(bad(format!(
                "cannot mix 'volume-*' options with mount type '{}'",
                mount.kind
            )));
        }
        mount.volume_options = Some(Value::Object(volume));
    }
    Ok(mount)
}

type Ports = (BTreeMap<String, Value>, BTreeMap<String, Value>);

/// `-p [ip:][hostPort:]containerPort[/proto]`: ExposedPorts and PortBindings.
pub fn parse_publish(specs: &[String]) -> Result<Ports, OptsError> {
    let mut exposed = BTreeMap::new();
    let mut bindings: BTreeMap<String, Value> = BTreeMap::new();
    for spec in specs {
        let (addr, proto) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
        let parts: Vec<&str> = addr.split(':').collect();
        let (ip, host_port, port) = match parts.as_slice() {
            [p] => ("", "", *p),
            [h, p] => ("", *h, *p),
            [ip, h, p] => (*ip, *h, *p),
            _ => return Err(OptsError::Publish(spec.clone())),
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            return Err(flag_error(
                spec,
                "-p, --publish",
                format!("invalid containerPort: {port}"),
            ));
        }
        let key = format!("{port}/{proto}");
        exposed.insert(key.clone(), json!({}));
        let entry = bindings.entry(key).or_insert_with(|| json!([]));
        if let Value::Array(list) = entry {
            list.push(json!({"HostIp": ip, "HostPort": host_port}));
        }
    }
    Ok((exposed, bindings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> ContainerOpts {
        ContainerOpts {
            args: args.iter().map(|s| s.to_string()).collect(),
            pull: "missing".into(),
            restart: "no".into(),
            ..ContainerOpts::default()
        }
    }

    #[test]
    fn env_file_lines() {
        std::env::set_var("BERTH_TEST_FROM_ENV", "yes");
        let text = "# comment\n\nA=1\n  B=two words\nBERTH_TEST_FROM_ENV\nBERTH_TEST_UNSET_X\nC=\n";
        let env = parse_env_lines(text, Path::new("f")).unwrap();
        assert_eq!(env, ["A=1", "B=two words", "BERTH_TEST_FROM_ENV=yes", "C="]);
        assert!(parse_env_lines("BAD NAME=1\n", Path::new("f")).is_err());
    }

    #[test]
    fn env_flags_take_unset_values_from_our_environment() {
        std::env::set_var("BERTH_TEST_E_FLAG", "from-env");
        assert_eq!(resolve_env("A=1"), "A=1");
        assert_eq!(resolve_env("A="), "A=");
        assert_eq!(
            resolve_env("BERTH_TEST_E_FLAG"),
            "BERTH_TEST_E_FLAG=from-env"
        );
        assert_eq!(resolve_env("BERTH_TEST_E_UNSET"), "BERTH_TEST_E_UNSET");
    }

    #[test]
    fn memory_cpus_and_log_opts() {
        assert_eq!(parse_memory("64m", "-m, --memory").unwrap(), 64 << 20);
        let e = parse_memory("x", "-m, --memory").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument \"x\" for \"-m, --memory\" flag: invalid size: 'x'"
        );
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_cpus("0.001").unwrap(), 1_000_000);
        assert!(parse_cpus("abc").is_err());
        assert!(parse_cpus("-1").is_err());
        let opts = parse_log_opts(&["max-size=10m".into(), "max-file=3".into()]).unwrap();
        assert_eq!(opts["max-size"], "10m");
        assert_eq!(parse_log_opts(&["nokey".into()]).unwrap()["nokey"], "");
        assert_eq!(
            parse_restart("on-failure:3").unwrap().maximum_retry_count,
            3
        );
        assert!(parse_restart("on-failure:x").is_err());
    }

    #[test]
    fn volumes_mounts_and_tmpfs() {
        assert_eq!(
            parse_volume("/host:/c:ro"),
            VolumeSpec::Bind("/host:/c:ro".into())
        );
        assert_eq!(parse_volume("/data"), VolumeSpec::Anonymous("/data".into()));
        assert_eq!(parse_volume("a:b:c:d"), VolumeSpec::Bind("a:b:c:d".into()));
        let m = parse_mount("type=bind,source=/a,target=/b,readonly").unwrap();
        assert_eq!(
            (m.kind.as_str(), m.source.as_str(), m.target.as_str()),
            ("bind", "/a", "/b")
        );
        assert!(m.read_only);
        let m = parse_mount("type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap();
        let t = m.tmpfs_options.unwrap();
        assert_eq!((t.size_bytes, t.mode), (Some(1 << 20), Some(0o1770)));
        assert!(parse_mount("type=bind,source=/a").is_err());
        assert!(parse_mount("type=bind,target=/a,bogus=1").is_err());

        let req = opts(&["img"]).to_request(true);
        assert!(req.unwrap().host_config.tmpfs.is_none());
        let mut o = opts(&["img"]);
        o.tmpfs = vec!["/run:size=1m".into(), "/tmp".into()];
        let tmpfs = o.to_request(true).unwrap().host_config.tmpfs.unwrap();
        assert_eq!(tmpfs["/run"], "size=1m");
        assert_eq!(tmpfs["/tmp"], "");
    }

    #[test]
    fn publish_specs() {
        let (exposed, bindings) =
            parse_publish(&["8080:80".into(), "127.0.0.1:53:53/udp".into(), "90".into()]).unwrap();
        assert!(exposed.contains_key("80/tcp") && exposed.contains_key("53/udp"));
        assert_eq!(
            bindings["80/tcp"],
            json!([{"HostIp": "", "HostPort": "8080"}])
        );
        assert_eq!(
            bindings["53/udp"],
            json!([{"HostIp": "127.0.0.1", "HostPort": "53"}])
        );
        assert_eq!(bindings["90/tcp"], json!([{"HostIp": "", "HostPort": ""}]));
        assert!(parse_publish(&["a:b:c:d".into()]).is_err());
    }

    #[test]
    fn the_request_carries_command_env_and_attach_flags() {
        let mut o = opts(&["busybox", "sh", "-c", "echo hi"]);
        o.interactive = true;
        o.env = vec!["A=1".into()];
        o.label = vec!["k=v".into(), "flag".into()];
        o.memory = Some("16m".into());
        let req = o.to_request(true).unwrap();
        assert_eq!(req.config.image, "busybox");
        assert_eq!(req.config.cmd.unwrap(), ["sh", "-c", "echo hi"]);
        assert!(req.config.attach_stdin && req.config.open_stdin && req.config.stdin_once);
        assert_eq!(req.config.env.unwrap(), ["A=1"]);
        assert_eq!(req.config.labels.unwrap()["flag"], "");
        assert_eq!(req.host_config.memory, 16 << 20);
        assert_eq!(req.host_config.network_mode, "default");
        let detached = opts(&["busybox"]).to_request(false).unwrap();
        assert!(!detached.config.attach_stdout && detached.config.cmd.is_none());
    }
}
