//! Legacy `--link` on the default bridge: the environment a container
//! gets for each container it links to, as Docker writes it at every start
//! (`DB_PORT=tcp://ip:80`, `DB_PORT_80_TCP=...` with `_ADDR`, `_PORT`,
//! `_PROTO`, `_START`/`_END` for contiguous ports, `DB_NAME=/me/db`,
//! `DB_ENV_X=...` for the linked container's environment), and the removal
//! of a link (`DELETE /containers/me/db?link=1`). The `/etc/hosts` entries
//! of links are written with the other files (`files`); on user networks a
//! link is a name in the embedded DNS server instead.

use super::ports::Proto;
use super::{NetworkError, Result};
use crate::containers::ContainerRecord;
use crate::Engine;

/// One linked container as its environment needs it.
struct Linked {
    /// `/me/db`.
    name: String,
    alias: String,
    /// Its address on the default bridge; empty when it has none (Docker
    /// writes the variables all the same).
    ip: String,
    /// Exposed ports, sorted (by number, tcp first).
    ports: Vec<(u16, Proto)>,
    env: Vec<String>,
}

/// The environment of a container's links on the default bridge (none
/// when it is not on it). A linked container that is not running is
/// Docker's error.
fn linked(engine: &Engine, record: &ContainerRecord) -> Result<Vec<Linked>> {
    let links = record.host_config.links.clone().unwrap_or_default();
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let on_bridge = super::endpoints::configured(record)
        .iter()
        .any(|(name, _)| name == "bridge");
    // (without networking set up, no container has an address)
    let bridge = engine.networks.get("bridge").ok();
    if !on_bridge {
        return Ok(Vec::new());
    }
    let me = record.name.trim_start_matches('/');
    let mut out = Vec::new();
    for link in links {
        let (target, alias) = super::files::parse_link(&link);
        let name = format!("/{me}/{alias}");
        let child = engine
            .containers
            .get(&target)
            .map_err(|_| NetworkError::LinkTarget(target.clone()))?;
        let r = child.record();
        if !r.state.status.is_running() {
            return Err(NetworkError::LinkNotRunning {
                target: format!("/{}", r.name.trim_start_matches('/')),
                name,
            });
        }
        let ip = engine
            .networks
            .endpoints_of_container(&r.id)
            .into_iter()
            .find(|e| bridge.as_ref().is_some_and(|b| e.network == b.id))
            .map(|e| e.ip.to_string())
            .unwrap_or_default();
        let mut ports: Vec<(u16, Proto)> = r
            .config
            .exposed_ports
            .iter()
            .flat_map(|m| m.keys())
            .filter_map(|k| super::ports::parse_port_key(k).ok())
            .flat_map(|(range, proto)| range.map(move |p| (p, proto)))
            .collect();
        ports.sort_by_key(|(p, proto)| (*p, *proto != Proto::Tcp));
        ports.dedup();
        out.push(Linked {
            name,
            alias,
            ip,
            ports,
            env: r.config.env.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Docker's variables for one link.
fn link_env(l: &Linked) -> Vec<String> {
    let alias = l.alias.to_uppercase().replace('-', "_");
    let ip = &l.ip;
    let mut env = Vec::new();
    if let Some((p, proto)) = l.ports.first() {
        env.push(format!("{alias}_PORT={proto}://{ip}:{p}"));
    }
    let var = |p: u16, proto: Proto| format!("{alias}_PORT_{p}_{}", proto.as_str().to_uppercase());
    let mut i = 0;
    while i < l.ports.len() {
        let (first, proto) = l.ports[i];
        // the end of the run of consecutive numbers from `i`
        let mut j = i;
        while j + 1 < l.ports.len() && l.ports[j + 1].0 == l.ports[j].0 + 1 {
            j += 1;
        }
        if j > i + 1 {
            let v = var(first, proto);
            let (last, last_proto) = l.ports[j];
            env.push(format!("{v}_START={proto}://{ip}:{first}"));
            env.push(format!("{v}_ADDR={ip}"));
            env.push(format!("{v}_PROTO={proto}"));
            env.push(format!("{v}_PORT_START={first}"));
            env.push(format!("{v}_END={last_proto}://{ip}:{last}"));
            env.push(format!("{v}_PORT_END={last}"));
        }
        for &(p, proto) in &l.ports[i..=j] {
            let v = var(p, proto);
            env.push(format!("{v}={proto}://{ip}:{p}"));
            env.push(format!("{v}_ADDR={ip}"));
            env.push(format!("{v}_PORT={p}"));
            env.push(format!("{v}_PROTO={proto}"));
        }
        i = j + 1;
    }
    env.push(format!("{alias}_NAME={}", l.name));
    for kv in &l.env {
        if let Some((k, v)) = kv.split_once('=') {
            if k != "HOME" && k != "PATH" {
                env.push(format!("{alias}_ENV_{k}={v}"));
            }
        }
    }
    env
}

/// The environment of the container's links, before its own (whose
/// variables win): what its spec says at this start.
pub fn environment(engine: &Engine, record: &ContainerRecord) -> Result<Vec<String>> {
    let own = record.config.env.clone().unwrap_or_default();
    let own_keys: Vec<&str> = own
        .iter()
        .map(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k))
        .collect();
    let mut env: Vec<String> = linked(engine, record)?
        .iter()
        .flat_map(link_env)
        .filter(|kv| {
            let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            !own_keys.contains(&k)
        })
        .collect();
    env.extend(own);
    Ok(env)
}

/// At start, before the task is made: the spec given the links'
/// environment (a container without links on the default bridge is left
/// as it is).
pub async fn apply(engine: &Engine, record: &ContainerRecord) -> Result<()> {
    if record
        .host_config
        .links
        .as_ref()
        .is_none_or(|l| l.is_empty())
    {
        return Ok(());
    }
    let env = environment(engine, record)?;
    if record.config.env.as_ref().is_some_and(|own| *own == env) {
        return Ok(());
    }
    write_spec(engine, record, env).await
}

/// The container's spec made again with `env`.
async fn write_spec(engine: &Engine, record: &ContainerRecord, env: Vec<String>) -> Result<()> {
    let spec_err = |e: crate::containers::ContainerError| NetworkError::LinkSpec(e.to_string());
    let mut with_links = record.clone();
    with_links.config.env = Some(env);
    let image = crate::images::resolve(engine, &record.image_ref)
        .await
        .map_err(|e| NetworkError::LinkSpec(e.to_string()))?;
    let spec = crate::containers::runspec::container_spec(engine, &with_links, &image)
        .map_err(spec_err)?;
    engine
        .supervisor
        .update_container_spec(&record.id, spec)
        .await
        .map_err(|e| NetworkError::LinkSpec(e.to_string()))
}

/// `DELETE /containers/{parent}/{alias}?link=1`: the parent's link of that
/// alias goes (its hosts file and environment lose it at its next start;
/// a container without links left gets its own environment back now).
pub async fn remove(engine: &Engine, link_name: &str) -> Result<()> {
    let full = format!("/{}", link_name.trim_start_matches('/'));
    let (parent, alias) = full.rsplit_once('/').unwrap_or(("", &full));
    if parent.is_empty() {
        return Err(NetworkError::InvalidConfig(
            "Conflict, cannot remove the default link name of the container".into(),
        ));
    }
    let parent_c = engine
        .containers
        .get(parent.trim_start_matches('/'))
        .map_err(|_| {
            NetworkError::LinkTarget(format!("Cannot get parent {parent} for link name {full}"))
        })?;
    let links = parent_c.record().host_config.links.unwrap_or_default();
    let kept: Vec<String> = links
        .iter()
        .filter(|l| super::files::parse_link(l).1 != alias)
        .cloned()
        .collect();
    if kept.len() == links.len() {
        return Err(NetworkError::LinkTarget(format!(
            "Could not find entity for {full}"
        )));
    }
    parent_c.update(|r| r.host_config.links = Some(kept.clone()));
    engine
        .containers
        .persist(&parent_c)
        .map_err(|e| NetworkError::LinkSpec(e.to_string()))?;
    if kept.is_empty() {
        let record = parent_c.record();
        let own = record.config.env.clone().unwrap_or_default();
        write_spec(engine, &record, own).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_variables() {
        let l = Linked {
            name: "/web/db".into(),
            alias: "my-db".into(),
            ip: "172.17.0.2".into(),
            ports: vec![
                (53, Proto::Tcp),
                (53, Proto::Udp),
                (80, Proto::Tcp),
                (81, Proto::Tcp),
                (82, Proto::Tcp),
            ],
            env: vec!["PATH=/bin".into(), "X=1=2".into(), "HOME=/root".into()],
        };
        let env = link_env(&l);
        for want in [
            "MY_DB_PORT=tcp://172.17.0.2:53",
            "MY_DB_PORT_53_TCP=tcp://172.17.0.2:53",
            "MY_DB_PORT_53_UDP=udp://172.17.0.2:53",
            "MY_DB_PORT_53_UDP_PROTO=udp",
            "MY_DB_PORT_80_TCP=tcp://172.17.0.2:80",
            "MY_DB_PORT_80_TCP_ADDR=172.17.0.2",
            "MY_DB_PORT_80_TCP_PORT=80",
            "MY_DB_PORT_80_TCP_PROTO=tcp",
            "MY_DB_PORT_80_TCP_START=tcp://172.17.0.2:80",
            "MY_DB_PORT_80_TCP_PORT_START=80",
            "MY_DB_PORT_80_TCP_END=tcp://172.17.0.2:82",
            "MY_DB_PORT_80_TCP_PORT_END=82",
            "MY_DB_PORT_82_TCP=tcp://172.17.0.2:82",
            "MY_DB_NAME=/web/db",
            "MY_DB_ENV_X=1=2",
        ] {
            assert!(env.iter().any(|e| e == want), "missing {want} in {env:#?}");
        }
        assert!(!env
            .iter()
            .any(|e| e.contains("_ENV_PATH") || e.contains("_ENV_HOME")));
        // 53/tcp and 53/udp are one number: no range of them
        assert!(!env.iter().any(|e| e.starts_with("MY_DB_PORT_53_TCP_START")));
    }
}
