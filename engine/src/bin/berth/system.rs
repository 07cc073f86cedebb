//! version, info, events, system df and the prunes.

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use crate::auth;
use crate::client::{query, version_less, Client, API_VERSION};
use crate::common::{confirm, filters_json, print_rows};
use crate::image;
use crate::output::template::Format;
use crate::output::units;
use crate::StatusError;

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Show the berth version information
    Version(FormatArgs),
    /// Display system-wide information
    Info(FormatArgs),
    /// Get real time events from the server
    Events(EventsArgs),
    /// Log in to a registry
    Login(auth::LoginArgs),
    /// Log out from a registry
    Logout(auth::LogoutArgs),
    /// Manage berth
    #[command(subcommand)]
    System(SystemGroup),
}

#[derive(Subcommand)]
pub enum SystemGroup {
    /// Show berth disk usage
    Df(DfArgs),
    /// Remove unused data
    Prune(SystemPruneArgs),
    /// Display system-wide information
    Info(FormatArgs),
    /// Get real time events from the server
    Events(EventsArgs),
}

#[derive(Args)]
pub struct DfArgs {
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Show detailed information on space usage
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

#[derive(Args)]
pub struct FormatArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

#[derive(Args)]
pub struct EventsArgs {
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Show all events created since timestamp
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

#[derive(Args)]
pub struct SystemPruneArgs {
    /// Remove all unused images not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Prune anonymous volumes
    #[arg(long)]
    pub volumes: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

pub async fn run(c: &Client, cmd: SystemCommand) -> anyhow::Result<()> {
    match cmd {
        SystemCommand::Version(a) => version(c, a).await,
        SystemCommand::Info(a) | SystemCommand::System(SystemGroup::Info(a)) => info(c, a).await,
        SystemCommand::Events(a) | SystemCommand::System(SystemGroup::Events(a)) => {
            events(c, a).await
        }
        SystemCommand::Login(a) => auth::login(c, a).await,
        SystemCommand::Logout(a) => auth::logout(a),
        SystemCommand::System(SystemGroup::Df(a)) => df(c, a).await,
        SystemCommand::System(SystemGroup::Prune(a)) => system_prune(c, a).await,
    }
}

fn render_one(format: &str, value: &Value) -> anyhow::Result<()> {
    let f = Format::parse(format).map_err(|e| StatusError::new(1, e.to_string()))?;
    let text = f
        .render(value)
        .map_err(|e| StatusError::new(1, e.to_string()))?;
    println!("{text}");
    Ok(())
}

async fn version(c: &Client, a: FormatArgs) -> anyhow::Result<()> {
    let negotiated = c.version().await.map(str::to_string);
    let mut client = json!({
        "Platform": {"Name": ""},
        "Version": env!("CARGO_PKG_VERSION"),
        "APIVersion": negotiated.as_deref().unwrap_or(API_VERSION),
        "DefaultAPIVersion": API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": std::env::consts::OS,
        "Arch": berth_engine::go_arch(),
        "BuildTime": "",
        "Context": crate::context::in_use(),
    });
    let mut server: Option<Value> = match negotiated {
        Ok(_) => Some(c.json(Method::GET, "/version", None).await?),
        Err(_) => None,
    };
    // Templates see the Go field (APIVersion) of the JSON key ApiVersion.
    if let Some(s) = server.as_mut().and_then(Value::as_object_mut) {
        if let Some(v) = s.get("ApiVersion").cloned() {
            s.insert("APIVersion".into(), v);
        }
    }
    if let Some(f) = a.format.as_deref() {
        client["Experimental"] = json!(true);
        return render_one(f, &json!({"Client": client, "Server": server}));
    }
    let api = client["APIVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api_line = if version_less(&api, API_VERSION) {
        format!("{api} (downgraded from {API_VERSION})")
    } else {
        api
    };
    println!("Client:");
    println!(
        " Version:           {}",
        client["Version"].as_str().unwrap_or_default()
    );
    println!(" API version:       {api_line}");
    println!(
        " OS/Arch:           {}/{}",
        std::env::consts::OS,
        berth_engine::go_arch()
    );
    println!(" Context:           {}", crate::context::in_use());
    let Some(s) = server else {
        return Err(negotiated_error(c).await);
    };
    let g = |k: &str| s[k].as_str().unwrap_or_default().to_string();
    println!();
    match s["Platform"]["Name"].as_str().filter(|n| !n.is_empty()) {
        Some(name) => println!("Server: {name}"),
        None => println!("Server:"),
    }
    for comp in s["Components"].as_array().into_iter().flatten() {
        let name = comp["Name"].as_str().unwrap_or_default();
        println!(" {name}:");
        if name == "Engine" {
            println!("  Version:          {}", g("Version"));
            println!(
                "  API version:      {} (minimum version {})",
                g("ApiVersion"),
                g("MinAPIVersion")
            );
            println!("  Go version:       {}", g("GoVersion"));
            println!("  Git commit:       {}", g("GitCommit"));
            let built = g("BuildTime");
            let built = units::parse_rfc3339(&built).map_or(built, |t| units::ansic(t as i64));
            println!("  Built:            {built}");
            println!("  OS/Arch:          {}/{}", g("Os"), g("Arch"));
            println!(
                "  Experimental:     {}",
                s["Experimental"].as_bool().unwrap_or(false)
            );
        } else {
            println!(
                "  Version:          {}",
                comp["Version"].as_str().unwrap_or_default()
            );
            if let Some(commit) = comp["Details"]["GitCommit"].as_str() {
                println!("  GitCommit:        {commit}");
            }
        }
    }
    Ok(())
}

async fn negotiated_error(c: &Client) -> anyhow::Error {
    match c.version().await {
        Err(e) => e.into(),
        Ok(_) => anyhow::anyhow!("the daemon did not answer /version"),
    }
}

async fn info(c: &Client, a: FormatArgs) -> anyhow::Result<()> {
    let s: Value = c.json(Method::GET, "/info", None).await?;
    if let Some(f) = a.format.as_deref() {
        if f == "json" {
            println!("{s}");
            return Ok(());
        }
        return render_one(f, &s);
    }
    let g = |k: &str| match &s[k] {
        Value::String(v) => v.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    println!("Client:");
    println!(" Version:    {}", env!("CARGO_PKG_VERSION"));
    println!(" Context:    default");
    println!(" Debug Mode: false");
    println!();
    println!("Server:");
    println!(" Containers: {}", g("Containers"));
    println!("  Running: {}", g("ContainersRunning"));
    println!("  Paused: {}", g("ContainersPaused"));
    println!("  Stopped: {}", g("ContainersStopped"));
    println!(" Images: {}", g("Images"));
    println!(" Server Version: {}", g("ServerVersion"));
    println!(" Storage Driver: {}", g("Driver"));
    for pair in s["DriverStatus"].as_array().into_iter().flatten() {
        if let [k, v] = pair.as_array().map(Vec::as_slice).unwrap_or_default() {
            println!(
                "  {}: {}",
                k.as_str().unwrap_or_default(),
                v.as_str().unwrap_or_default()
            );
        }
    }
    println!(" Logging Driver: {}", g("LoggingDriver"));
    println!(" Cgroup Driver: {}", g("CgroupDriver"));
    println!(" Cgroup Version: {}", g("CgroupVersion"));
    println!(" Plugins:");
    for kind in ["Volume", "Network", "Authorization", "Log"] {
        let names: Vec<&str> = s["Plugins"][kind]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !names.is_empty() {
            println!("  {kind}: {}", names.join(" "));
        }
    }
    let swarm = s["Swarm"]["LocalNodeState"].as_str().unwrap_or("inactive");
    println!(
        " Swarm: {}",
        if swarm.is_empty() { "inactive" } else { swarm }
    );
    let mut runtimes: Vec<&String> = s["Runtimes"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    runtimes.sort();
    let runtimes: Vec<&str> = runtimes.into_iter().map(String::as_str).collect();
    println!(" Runtimes: {}", runtimes.join(" "));
    println!(" Default Runtime: {}", g("DefaultRuntime"));
    println!(" Init Binary: {}", g("InitBinary"));
    let commit = |k: &str| s[k]["ID"].as_str().unwrap_or_default().to_string();
    println!(" containerd version: {}", commit("ContainerdCommit"));
    println!(" runc version: {}", commit("RuncCommit"));
    println!(" init version: {}", commit("InitCommit"));
    let security: Vec<&str> = s["SecurityOptions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !security.is_empty() {
        println!(" Security Options:");
        for opt in security {
            let mut fields = opt.split(',');
            let name = fields.next().unwrap_or_default();
            println!("  {}", name.strip_prefix("name=").unwrap_or(name));
            for f in fields {
                if let Some((k, v)) = f.split_once('=') {
                    let mut k = k.to_string();
                    if let Some(first) = k.get_mut(0..1) {
                        first.make_ascii_uppercase();
                    }
                    println!("   {k}: {v}");
                }
            }
        }
    }
    println!(" Kernel Version: {}", g("KernelVersion"));
    println!(" Operating System: {}", g("OperatingSystem"));
    println!(" OSType: {}", g("OSType"));
    println!(" Architecture: {}", g("Architecture"));
    println!(" CPUs: {}", g("NCPU"));
    println!(
        " Total Memory: {}",
        units::bytes_size(s["MemTotal"].as_f64().unwrap_or(0.0))
    );
    println!(" Name: {}", g("Name"));
    println!(" ID: {}", g("ID"));
    println!(" Docker Root Dir: {}", g("DockerRootDir"));
    let debug = s["Debug"].as_bool().unwrap_or(false);
    println!(" Debug Mode: {debug}");
    if debug {
        println!("  File Descriptors: {}", g("NFd"));
        println!("  Goroutines: {}", g("NGoroutines"));
        println!("  System Time: {}", g("SystemTime"));
        println!("  EventsListeners: {}", g("NEventsListener"));
    }
    println!(
        " Experimental: {}",
        s["ExperimentalBuild"].as_bool().unwrap_or(false)
    );
    let insecure: Vec<&str> = s["RegistryConfig"]["InsecureRegistryCIDRs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !insecure.is_empty() {
        println!(" Insecure Registries:");
        for r in insecure {
            println!("  {r}");
        }
    }
    println!(
        " Live Restore Enabled: {}",
        s["LiveRestoreEnabled"].as_bool().unwrap_or(false)
    );
    println!();
    for w in s["Warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        eprintln!("{w}");
    }
    Ok(())
}

async fn events(c: &Client, a: EventsArgs) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let now = units::now_unix();
    let mut q = Vec::new();
    for (name, v) in [("since", &a.since), ("until", &a.until)] {
        if let Some(v) = v {
            let t = units::api_time(v, now)
                .ok_or_else(|| StatusError::new(1, format!("invalid value for \"{name}\": {v}")))?;
            q.push((name, t));
        }
    }
    if let Some(f) = filters_json(&a.filter)? {
        q.push(("filters", f));
    }
    let format = match a.format.as_deref() {
        Some("json") => Some(Format::parse("{{json .}}")?),
        Some(f) => Some(Format::parse(f).map_err(|e| StatusError::new(1, e.to_string()))?),
        None => None,
    };
    let resp = c
        .send(
            Method::GET,
            &format!("/events{}", query(&q)),
            bytes::Bytes::new(),
            &[],
        )
        .await?;
    let mut body = resp.into_body();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let Ok(ev) = serde_json::from_slice::<Value>(line.trim_ascii()) else {
                continue;
            };
            match &format {
                Some(f) => println!("{}", f.render(&ev)?),
                None => println!("{}", event_line(&ev)),
            }
        }
    }
    Ok(())
}

/// docker's event line: "TIME TYPE ACTION ID (k=v, ...)".
pub fn event_line(ev: &Value) -> String {
    let nanos = ev["timeNano"].as_i64().unwrap_or(0);
    let time = units::rfc3339_nanos(
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000) as u32,
    );
    let kind = ev["Type"].as_str().unwrap_or_default();
    let action = ev["Action"].as_str().unwrap_or_default();
    let id = ev["Actor"]["ID"].as_str().unwrap_or_default();
    let mut attrs: Vec<String> = ev["Actor"]["Attributes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    attrs.sort();
    if attrs.is_empty() {
        format!("{time} {kind} {action} {id}")
    } else {
        format!("{time} {kind} {action} {id} ({})", attrs.join(", "))
    }
}

async fn df(c: &Client, a: DfArgs) -> anyhow::Result<()> {
    let v: Value = c.json(Method::GET, "/system/df", None).await?;
    if a.verbose {
        return crate::volume::print_df_verbose(&v);
    }
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let f = |x: &Value| x.as_f64().unwrap_or(0.0);
    let images = list("Images");
    let containers = list("Containers");
    let volumes = list("Volumes");
    let cache = list("BuildCache");
    let h = |x: f64| units::human_size(x);
    let reclaim = |r: f64, total: f64| {
        if total > 0.0 {
            format!("{} ({}%)", h(r), (r * 100.0 / total) as i64)
        } else {
            h(r)
        }
    };
    let img_size = f(&v["LayersSize"]);
    let img_active = images.iter().filter(|i| f(&i["Containers"]) > 0.0).count();
    let img_used: f64 = images
        .iter()
        .filter(|i| f(&i["Containers"]) > 0.0)
        .map(|i| f(&i["Size"]) - f(&i["SharedSize"]).max(0.0))
        .sum();
    let ctr_size: f64 = containers.iter().map(|c| f(&c["SizeRw"])).sum();
    let ctr_active = containers
        .iter()
        .filter(|c| c["State"] == "running" || c["State"] == "paused" || c["State"] == "restarting")
        .count();
    let ctr_reclaim: f64 = containers
        .iter()
        .filter(|c| c["State"] != "running" && c["State"] != "paused")
        .map(|c| f(&c["SizeRw"]))
        .sum();
    let vol_size: f64 = volumes
        .iter()
        .map(|x| f(&x["UsageData"]["Size"]).max(0.0))
        .sum();
    let vol_active = volumes
        .iter()
        .filter(|x| f(&x["UsageData"]["RefCount"]) > 0.0)
        .count();
    let cache_size: f64 = cache.iter().map(|x| f(&x["Size"])).sum();
    let rows = vec![
        json!({"Type": "Images", "TotalCount": images.len().to_string(), "Active": img_active.to_string(),
               "Size": h(img_size), "Reclaimable": reclaim((img_size - img_used).max(0.0), img_size)}),
        json!({"Type": "Containers", "TotalCount": containers.len().to_string(), "Active": ctr_active.to_string(),
               "Size": h(ctr_size), "Reclaimable": reclaim(ctr_reclaim, ctr_size)}),
        json!({"Type": "Local Volumes", "TotalCount": volumes.len().to_string(), "Active": vol_active.to_string(),
               "Size": h(vol_size), "Reclaimable": reclaim(0.0, vol_size)}),
        json!({"Type": "Build Cache", "TotalCount": cache.len().to_string(), "Active": "0",
               "Size": h(cache_size), "Reclaimable": h(cache_size)}),
    ];
    print_rows(
        a.format.as_deref(),
        "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
        &rows,
        &[
            ("Type", "TYPE"),
            ("TotalCount", "TOTAL"),
            ("Active", "ACTIVE"),
            ("Size", "SIZE"),
            ("Reclaimable", "RECLAIMABLE"),
        ],
    )
}

/// `POST /containers/prune`: the ids removed and the space reclaimed.
async fn prune_containers(c: &Client, filters: &[String]) -> anyhow::Result<(Vec<String>, f64)> {
    let q = match filters_json(filters)? {
        Some(f) => query(&[("filters", f)]),
        None => String::new(),
    };
    let v: Value = c
        .json(Method::POST, &format!("/containers/prune{q}"), None)
        .await?;
    let ids = v["ContainersDeleted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    Ok((ids, v["SpaceReclaimed"].as_f64().unwrap_or(0.0)))
}

pub async fn container_prune(c: &Client, a: PruneArgs) -> anyhow::Result<()> {
    if !a.force && !confirm("WARNING! This will remove all stopped containers.") {
        return Ok(());
    }
    let (ids, reclaimed) = prune_containers(c, &a.filter).await?;
    if !ids.is_empty() {
        println!("Deleted Containers:");
        for id in &ids {
            println!("{id}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", units::human_size(reclaimed));
    Ok(())
}

async fn system_prune(c: &Client, a: SystemPruneArgs) -> anyhow::Result<()> {
    let images = if a.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    };
    let warning = format!(
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n{}  - {images}\n  - unused build cache\n",
        if a.volumes { "  - all anonymous volumes not used by at least one container\n" } else { "" }
    );
    if !a.force && !confirm(&warning) {
        return Ok(());
    }
    let (ids, mut reclaimed) = prune_containers(c, &a.filter).await?;
    if !ids.is_empty() {
        println!("Deleted Containers:");
        for id in &ids {
            println!("{id}");
        }
        println!();
    }
    let (lines, space) = image::prune_images(c, a.all, &a.filter).await?;
    reclaimed += space;
    if !lines.is_empty() {
        println!("Deleted Images:");
        for l in &lines {
            println!("{l}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", units::human_size(reclaimed));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::table;

    #[test]
    fn event_lines_read_as_docker_prints_them() {
        let ev = json!({"Type": "container", "Action": "start", "timeNano": 1_700_000_000_000_000_005i64,
            "Actor": {"ID": "abc", "Attributes": {"name": "web", "image": "busybox"}}});
        assert_eq!(
            event_line(&ev),
            "2023-11-14T22:13:20.000000005Z container start abc (image=busybox, name=web)"
        );
    }

    #[test]
    fn aligned_tables_use_docker_widths() {
        assert_eq!(table::docker_align("A\tB\n"), "A         B\n");
    }
}
