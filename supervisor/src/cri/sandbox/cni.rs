//! Pod networking through CNI, as the CNI specification has runtimes do
//! it: the network is the first `.conflist` (or `.conf`/`.json`, a single
//! plugin) in the config directory in lexical order, read at each call so
//! a config dropped in later is used; each plugin of its chain is run from
//! the plugin directories with the spec's environment (`CNI_COMMAND`,
//! `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`)
//! and its config on stdin, with the network's `name` and `cniVersion`,
//! the previous plugin's result as `prevResult` and, for plugins that ask
//! for the `portMappings` capability, the pod's port mappings under
//! `runtimeConfig`. ADD runs the chain in order (the last result is the
//! pod's); DEL runs it in reverse, given the ADD's result, and tolerates
//! what is already gone. A plugin's failure is its own error message.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// The interface the pod's network gets inside its namespace.
pub const IFNAME: &str = "eth0";
/// How long one plugin may run.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no network config found in {0}: put a .conflist there")]
    NoConfig(PathBuf),
    #[error("read the CNI config directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("CNI config {path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("run CNI plugin {plugin:?}: {reason}")]
    Run { plugin: String, reason: String },
    /// The plugin's own error (its `msg` and `details`).
    #[error("plugin type={plugin:?} failed ({command}): {message}")]
    Plugin {
        plugin: String,
        command: &'static str,
        message: String,
    },
}

/// One network: a config list.
#[derive(Debug, Clone)]
pub struct Network {
    pub name: String,
    pub version: String,
    pub plugins: Vec<Value>,
    /// The file it was read from.
    pub path: PathBuf,
}

/// Where plugins and configs are.
#[derive(Debug, Clone)]
pub struct Cni {
    pub bin_dirs: Vec<PathBuf>,
    pub conf_dir: PathBuf,
}

/// A port the pod publishes on the host (the portmap plugin's form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: &'static str,
    pub host_ip: String,
}

/// Who the pod is, for `CNI_ARGS` (as kubelet's runtimes pass it).
#[derive(Debug, Clone, Default)]
pub struct PodArgs {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The addresses an ADD gave the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    pub ip: String,
    pub additional: Vec<String>,
}

impl Cni {
    /// The network to use: the first config in lexical order.
    pub fn load(&self) -> Result<Network, CniError> {
        let dir = &self.conf_dir;
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CniError::NoConfig(dir.clone()))
            }
            Err(source) => {
                return Err(CniError::ReadDir {
                    dir: dir.clone(),
                    source,
                })
            }
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
            })
            .collect();
        files.sort();
        let path = files
            .into_iter()
            .next()
            .ok_or_else(|| CniError::NoConfig(dir.clone()))?;
        parse_network(&path)
    }

    fn find_plugin(&self, plugin: &str) -> Result<PathBuf, CniError> {
        if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
            return Err(CniError::PluginNotFound {
                plugin: plugin.to_string(),
                dirs: self.path_var(),
            });
        }
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::PluginNotFound {
                plugin: plugin.to_string(),
                dirs: self.path_var(),
            })
    }

    fn path_var(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Runs one plugin; its result (stdout JSON, `null` when empty).
    async fn exec(
        &self,
        command: &'static str,
        config: &Value,
        id: &str,
        netns: &Path,
        args: &PodArgs,
    ) -> Result<Value, CniError> {
        let plugin = config["type"].as_str().unwrap_or_default().to_string();
        let binary = self.find_plugin(&plugin)?;
        let cni_args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            args.namespace, args.name, id, args.uid
        );
        let run_err = |reason: String| CniError::Run {
            plugin: plugin.clone(),
            reason,
        };
        let mut child = tokio::process::Command::new(&binary)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_ARGS", cni_args)
            .env("CNI_PATH", self.path_var())
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| run_err(format!("start {}: {e}", binary.display())))?;
        let input = config.to_string().into_bytes();
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&input)
                .await
                .map_err(|e| run_err(format!("write its config: {e}")))?;
        }
        let out = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| run_err(format!("no answer within {PLUGIN_TIMEOUT:?}")))?
            .map_err(|e| run_err(e.to_string()))?;
        let stdout: Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).map_err(|e| {
                run_err(format!(
                    "its output is not JSON ({e}): {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                ))
            })?
        };
        if !out.status.success() {
            let mut message = stdout["msg"].as_str().unwrap_or_default().to_string();
            if let Some(details) = stdout["details"].as_str().filter(|d| !d.is_empty()) {
                message = format!("{message}: {details}");
            }
            if message.is_empty() {
                let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
                message = if stderr.is_empty() {
                    format!("exited with {}", out.status)
                } else {
                    stderr
                };
            }
            return Err(CniError::Plugin {
                plugin,
                command,
                message,
            });
        }
        Ok(stdout)
    }

    /// ADD: attaches the pod in `netns` to the network; the last
    /// plugin's result. On failure what was added is deleted again.
    pub async fn add(
        &self,
        network: &Network,
        id: &str,
        netns: &Path,
        args: &PodArgs,
        ports: &[PortMapping],
    ) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for plugin in &network.plugins {
            let config = plugin_config(network, plugin, prev.as_ref(), ports);
            match self.exec("ADD", &config, id, netns, args).await {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    if let Err(de) = self.del(network, id, netns, args, ports, None).await {
                        tracing::warn!(sandbox = id, error = %de, "CNI DEL after a failed ADD");
                    }
                    return Err(e);
                }
            }
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL: detaches the pod, in reverse order, given the ADD's result.
    /// Every plugin is run; the first error is returned.
    pub async fn del(
        &self,
        network: &Network,
        id: &str,
        netns: &Path,
        args: &PodArgs,
        ports: &[PortMapping],
        result: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first = None;
        for plugin in network.plugins.iter().rev() {
            let config = plugin_config(network, plugin, result, ports);
            if let Err(e) = self.exec("DEL", &config, id, netns, args).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Reads a config list, or a single plugin's config as a list of one.
pub fn parse_network(path: &Path) -> Result<Network, CniError> {
    let bad = |reason: String| CniError::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let doc: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let name = doc["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("it has no name".into()))?
        .to_string();
    let version = doc["cniVersion"].as_str().unwrap_or("0.4.0").to_string();
    let plugins = match doc.get("plugins") {
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err(bad("plugins is not a list".into())),
        None if doc.get("type").is_some() => vec![doc.clone()],
        None => return Err(bad("it has neither plugins nor a type".into())),
    };
    if plugins.is_empty() {
        return Err(bad("its plugin list is empty".into()));
    }
    for p in &plugins {
        if p["type"].as_str().is_none_or(str::is_empty) {
            return Err(bad(format!("a plugin has no type: {p}")));
        }
    }
    Ok(Network {
        name,
        version,
        plugins,
        path: path.to_path_buf(),
    })
}

/// What a plugin gets on stdin.
fn plugin_config(
    network: &Network,
    plugin: &Value,
    prev: Option<&Value>,
    ports: &[PortMapping],
) -> Value {
    let mut config = plugin.clone();
    config["name"] = json!(network.name);
    config["cniVersion"] = json!(network.version);
    if let Some(prev) = prev.filter(|p| !p.is_null()) {
        config["prevResult"] = prev.clone();
    }
    let wants_ports = plugin["capabilities"]["portMappings"].as_bool() == Some(true);
    if wants_ports && !ports.is_empty() {
        let mappings: Vec<Value> = ports
            .iter()
            .map(|p| {
                let mut m = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol,
                });
                if !p.host_ip.is_empty() {
                    m["hostIP"] = json!(p.host_ip);
                }
                m
            })
            .collect();
        config["runtimeConfig"] = json!({ "portMappings": mappings });
    }
    if let Some(obj) = config.as_object_mut() {
        obj.remove("capabilities");
    }
    config
}

/// The pod's addresses in a result: those on the interface inside the
/// pod (`sandbox` set), IPv4 first, without prefix lengths.
pub fn addresses(result: &Value) -> Addresses {
    let interfaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let in_pod = |ip: &Value| match ip["interface"].as_u64() {
        Some(i) => interfaces
            .get(i as usize)
            .is_none_or(|iface| iface["sandbox"].as_str().is_some_and(|s| !s.is_empty())),
        None => true,
    };
    let mut ips: Vec<String> = result["ips"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|ip| in_pod(ip))
                .filter_map(|ip| ip["address"].as_str())
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
                .collect()
        })
        .unwrap_or_default();
    // IPv4 first, as kubelet expects the primary address.
    ips.sort_by_key(|ip| ip.contains(':'));
    let mut it = ips.into_iter();
    Addresses {
        ip: it.next().unwrap_or_default(),
        additional: it.collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> Network {
        Network {
            name: "pods".into(),
            version: "1.0.0".into(),
            plugins: vec![
                json!({"type": "bridge", "bridge": "cni0"}),
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            ],
            path: PathBuf::from("/x"),
        }
    }

    #[test]
    fn the_first_config_in_lexical_order_is_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let cni = Cni {
            bin_dirs: vec![],
            conf_dir: dir.path().to_path_buf(),
        };
        assert!(matches!(cni.load(), Err(CniError::NoConfig(_))));
        std::fs::write(dir.path().join("README"), "not a config").unwrap();
        std::fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"loopback"}"#,
        )
        .unwrap();
        let n = cni.load().unwrap();
        assert_eq!(n.name, "a");
        assert_eq!(n.version, "0.4.0");
        assert_eq!(n.plugins[0]["type"], "loopback");
        std::fs::remove_file(dir.path().join("10-a.conf")).unwrap();
        assert_eq!(cni.load().unwrap().name, "b");
        std::fs::write(
            dir.path().join("05-bad.conflist"),
            r#"{"name":"x","plugins":[]}"#,
        )
        .unwrap();
        let e = cni.load().unwrap_err();
        assert!(e.to_string().contains("05-bad.conflist"), "{e}");
    }

    #[test]
    fn plugins_get_the_name_version_previous_result_and_their_ports() {
        let n = network();
        let ports = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp",
            host_ip: "127.0.0.1".into(),
        }];
        let prev = json!({"ips": [{"address": "10.1.0.2/24"}]});
        let bridge = plugin_config(&n, &n.plugins[0], None, &ports);
        assert_eq!(bridge["name"], "pods");
        assert_eq!(bridge["cniVersion"], "1.0.0");
        assert!(bridge.get("prevResult").is_none());
        assert!(bridge.get("runtimeConfig").is_none());
        let portmap = plugin_config(&n, &n.plugins[1], Some(&prev), &ports);
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}])
        );
        assert!(portmap.get("capabilities").is_none());
    }

    #[test]
    fn addresses_are_those_inside_the_pod_ipv4_first() {
        let result = json!({
            "interfaces": [
                {"name": "cni0"},
                {"name": "veth1"},
                {"name": "eth0", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "fd00::2/64", "interface": 2},
                {"address": "10.88.0.1/16", "interface": 0},
                {"address": "10.88.0.5/16", "interface": 2}
            ]
        });
        assert_eq!(
            addresses(&result),
            Addresses {
                ip: "10.88.0.5".into(),
                additional: vec!["fd00::2".into()],
            }
        );
        assert_eq!(addresses(&Value::Null), Addresses::default());
    }

    #[tokio::test]
    async fn a_failing_plugin_gives_its_own_message() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("failer");
        std::fs::write(
            &plugin,
            "#!/bin/sh\ncat >/dev/null\necho '{\"code\":11,\"msg\":\"no addresses left\",\"details\":\"range full\"}'\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let cni = Cni {
            bin_dirs: vec![PathBuf::from("/nonexistent"), dir.path().to_path_buf()],
            conf_dir: dir.path().to_path_buf(),
        };
        let n = Network {
            name: "n".into(),
            version: "1.0.0".into(),
            plugins: vec![json!({"type": "failer"})],
            path: PathBuf::from("/x"),
        };
        let e = cni
            .add(&n, "id", Path::new("/x"), &PodArgs::default(), &[])
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "plugin type=\"failer\" failed (ADD): no addresses left: range full"
        );
        let n = Network {
            plugins: vec![json!({"type": "absent"})],
            ..n
        };
        let e = cni
            .add(&n, "id", Path::new("/x"), &PodArgs::default(), &[])
            .await
            .unwrap_err();
        assert!(matches!(e, CniError::PluginNotFound { .. }), "{e}");
    }
}
