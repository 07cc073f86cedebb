//! `berth network create|ls|inspect|rm|prune|connect|disconnect`, with
//! docker's flags and output.

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Map, Value};

use crate::client::{enc, query, Client};
use crate::common::{confirm, filters_json, for_each, print_rows};
use crate::StatusError;

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove all unused networks
    Prune(PruneArgs),
    /// Connect a container to a network
    Connect(ConnectArgs),
    /// Disconnect a container from a network
    Disconnect(DisconnectArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Driver to manage the Network
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long)]
    subnet: Vec<String>,
    /// IPv4 or IPv6 Gateway for the master subnet
    #[arg(long)]
    gateway: Vec<String>,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range")]
    ip_range: Vec<String>,
    /// Restrict external access to the network
    #[arg(long)]
    internal: bool,
    /// Enable manual container attachment
    #[arg(long)]
    attachable: bool,
    /// Enable or disable IPv6 networking
    #[arg(long)]
    ipv6: bool,
    /// Set metadata on a network
    #[arg(long)]
    label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// IP Address Management Driver
    #[arg(long = "ipam-driver", default_value = "default")]
    ipam_driver: String,
    name: String,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only display network IDs
    #[arg(short, long)]
    quiet: bool,
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short, long)]
    filter: Vec<String>,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Do not error if the network does not exist
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long)]
    filter: Vec<String>,
}

#[derive(Args)]
pub struct ConnectArgs {
    /// IPv4 address (e.g., "172.30.100.104")
    #[arg(long)]
    ip: Option<String>,
    /// IPv6 address (e.g., "2001:db8::33")
    #[arg(long)]
    ip6: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long)]
    alias: Vec<String>,
    /// Add link to another container
    #[arg(long)]
    link: Vec<String>,
    network: String,
    container: String,
}

#[derive(Args)]
pub struct DisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short, long)]
    force: bool,
    network: String,
    container: String,
}

/// `key=value` flags as a map.
fn pairs(flags: &[String]) -> Map<String, Value> {
    flags
        .iter()
        .map(|f| {
            let (k, v) = f.split_once('=').unwrap_or((f, ""));
            (k.to_string(), json!(v))
        })
        .collect()
}

pub async fn run(c: &Client, cmd: NetworkCommand) -> anyhow::Result<()> {
    match cmd {
        NetworkCommand::Create(a) => create(c, a).await,
        NetworkCommand::Ls(a) => ls(c, a).await,
        NetworkCommand::Inspect(a) => inspect(c, a).await,
        NetworkCommand::Rm(a) => {
            let force = a.force;
            for_each(&a.names, |name| async move {
                match c
                    .bytes(Method::DELETE, &format!("/networks/{}", enc(&name)), None)
                    .await
                {
                    Ok(_) => Ok(Some(name)),
                    Err(e) if force && e.status() == Some(404) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })
            .await
        }
        NetworkCommand::Prune(a) => {
            let warning =
                "WARNING! This will remove all custom networks not used by at least one container.";
            if !a.force && !confirm(warning) {
                return Ok(());
            }
            let q = match filters_json(&a.filter)? {
                Some(f) => query(&[("filters", f)]),
                None => String::new(),
            };
            let v: Value = c
                .json(Method::POST, &format!("/networks/prune{q}"), None)
                .await?;
            let names: Vec<&str> = v["NetworksDeleted"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !names.is_empty() {
                println!("Deleted Networks:");
                for n in names {
                    println!("{n}");
                }
                println!();
            }
            Ok(())
        }
        NetworkCommand::Connect(a) => {
            let mut config = json!({});
            let mut ipam = serde_json::Map::new();
            if let Some(ip) = &a.ip {
                ipam.insert("IPv4Address".into(), json!(ip));
            }
            if let Some(ip) = &a.ip6 {
                ipam.insert("IPv6Address".into(), json!(ip));
            }
            if !ipam.is_empty() {
                config["IPAMConfig"] = serde_json::Value::Object(ipam);
            }
            if !a.alias.is_empty() {
                config["Aliases"] = json!(a.alias);
            }
            if !a.link.is_empty() {
                config["Links"] = json!(a.link);
            }
            let body = json!({"Container": a.container, "EndpointConfig": config});
            let path = format!("/networks/{}/connect", enc(&a.network));
            c.bytes(Method::POST, &path, Some(&body)).await?;
            Ok(())
        }
        NetworkCommand::Disconnect(a) => {
            let body = json!({"Container": a.container, "Force": a.force});
            let path = format!("/networks/{}/disconnect", enc(&a.network));
            c.bytes(Method::POST, &path, Some(&body)).await?;
            Ok(())
        }
    }
}

async fn create(c: &Client, a: CreateArgs) -> anyhow::Result<()> {
    if a.gateway.len() > a.subnet.len() || a.ip_range.len() > a.subnet.len() {
        return Err(StatusError::new(
            1,
            "Error response from daemon: every ip-range or gateway must have a corresponding subnet",
        )
        .into());
    }
    let config: Vec<Value> = a
        .subnet
        .iter()
        .enumerate()
        .map(|(i, subnet)| {
            let mut c = json!({ "Subnet": subnet });
            if let Some(gw) = a.gateway.get(i) {
                c["Gateway"] = json!(gw);
            }
            if let Some(r) = a.ip_range.get(i) {
                c["IPRange"] = json!(r);
            }
            c
        })
        .collect();
    let body = json!({
        "Name": a.name,
        "Driver": a.driver,
        "Internal": a.internal,
        "Attachable": a.attachable,
        "EnableIPv6": a.ipv6,
        "IPAM": { "Driver": a.ipam_driver, "Config": config, "Options": {} },
        "Options": pairs(&a.opt),
        "Labels": pairs(&a.label),
    });
    let v: Value = c
        .json(Method::POST, "/networks/create", Some(&body))
        .await?;
    println!("{}", v["Id"].as_str().unwrap_or_default());
    Ok(())
}

async fn ls(c: &Client, a: LsArgs) -> anyhow::Result<()> {
    let q = match filters_json(&a.filter)? {
        Some(f) => query(&[("filters", f)]),
        None => String::new(),
    };
    let list: Vec<Value> = c.json(Method::GET, &format!("/networks{q}"), None).await?;
    let rows: Vec<Value> = list
        .iter()
        .map(|n| {
            let id = n["Id"].as_str().unwrap_or_default();
            let id = if a.no_trunc {
                id
            } else {
                &id[..id.len().min(12)]
            };
            let labels = n["Labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            json!({
                "ID": id,
                "Name": n["Name"],
                "Driver": n["Driver"],
                "Scope": n["Scope"],
                "IPv6": n["EnableIPv6"].as_bool().unwrap_or(false).to_string(),
                "Internal": n["Internal"].as_bool().unwrap_or(false).to_string(),
                "Labels": labels,
                "CreatedAt": n["Created"],
            })
        })
        .collect();
    let format = if a.quiet {
        Some("{{.ID}}")
    } else {
        a.format.as_deref()
    };
    print_rows(
        format,
        "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
        &rows,
        &[
            ("ID", "NETWORK ID"),
            ("Name", "NAME"),
            ("Driver", "DRIVER"),
            ("Scope", "SCOPE"),
            ("IPv6", "IPV6"),
            ("Internal", "INTERNAL"),
            ("Labels", "LABELS"),
            ("CreatedAt", "CREATED AT"),
        ],
    )
}

async fn inspect(c: &Client, a: InspectArgs) -> anyhow::Result<()> {
    crate::common::inspect_each(c, "/networks", &a.names, a.format.as_deref()).await
}

/// `berth port CONTAINER [PRIVATE_PORT[/PROTO]]`.
#[derive(Args)]
pub struct PortArgs {
    container: String,
    private_port: Option<String>,
}

/// Prints a container's published ports as `docker port` does.
pub async fn port(c: &Client, a: PortArgs) -> anyhow::Result<()> {
    let v: Value = c
        .json(
            Method::GET,
            &format!("/containers/{}/json", enc(&a.container)),
            None,
        )
        .await?;
    let ports = v["NetworkSettings"]["Ports"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let want = a.private_port.as_deref().map(|p| {
        if p.contains('/') {
            p.to_string()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut lines = Vec::new();
    for (key, bindings) in &ports {
        if want.as_ref().is_some_and(|w| w != key) {
            continue;
        }
        for b in bindings.as_array().into_iter().flatten() {
            let ip = b["HostIp"].as_str().unwrap_or_default();
            let port = b["HostPort"].as_str().unwrap_or_default();
            let addr = if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            };
            lines.push(match &want {
                Some(_) => addr,
                None => format!("{key} -> {addr}"),
            });
        }
    }
    if let (Some(w), true) = (&want, lines.is_empty()) {
        return Err(StatusError::new(
            1,
            format!("Error: No public port '{w}' published for {}", a.container),
        )
        .into());
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
