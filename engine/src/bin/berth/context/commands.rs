//! The `berth context` commands: create, ls, use, inspect, rm, show and
//! update, on the store of the module above.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::{
    configured_current, current_name, default_host, default_tls, env, io_error, list, load,
    meta_dir, tls_dir, ConnectOptions, ContextError, DEFAULT, DEFAULT_DESCRIPTION, TLS_FILES,
};
use crate::common::print_rows;
use crate::transport::Endpoint;
use crate::StatusError;

#[derive(Subcommand)]
pub enum ContextCommand {
    /// Create a context
    Create(CreateArgs),
    /// List contexts
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Set the current docker context
    Use(UseArgs),
    /// Display detailed information on one or more contexts
    Inspect(InspectArgs),
    /// Remove one or more contexts
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Print the name of the current context
    Show,
    /// Update a context
    Update(UpdateArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    #[arg(value_name = "CONTEXT")]
    pub name: String,
    /// Description of the context
    #[arg(long)]
    pub description: Option<String>,
    /// set the docker endpoint (host=URL,ca=FILE,cert=FILE,key=FILE,skip-tls-verify=BOOL)
    #[arg(long, value_name = "stringToString")]
    pub docker: Option<String>,
    /// create context from a named context
    #[arg(long)]
    pub from: Option<String>,
}

#[derive(Args)]
pub struct LsArgs {
    /// Format output using a custom template: 'table', 'table TEMPLATE', 'json' or a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// Only show context names
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct UseArgs {
    #[arg(value_name = "CONTEXT")]
    pub name: String,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(value_name = "CONTEXT")]
    pub names: Vec<String>,
    /// Format output using a custom template
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Args)]
pub struct RmArgs {
    #[arg(value_name = "CONTEXT", required = true)]
    pub names: Vec<String>,
    /// Force the removal of a context in use
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args)]
pub struct UpdateArgs {
    #[arg(value_name = "CONTEXT")]
    pub name: String,
    /// Description of the context
    #[arg(long)]
    pub description: Option<String>,
    /// set the docker endpoint (host=URL,ca=FILE,cert=FILE,key=FILE,skip-tls-verify=BOOL)
    #[arg(long, value_name = "stringToString")]
    pub docker: Option<String>,
}

/// Runs a context command; `opts` are the global options (for `show`).
pub fn run(cmd: ContextCommand, opts: &ConnectOptions) -> anyhow::Result<()> {
    let result = match cmd {
        ContextCommand::Create(a) => create(a, opts),
        ContextCommand::Ls(a) => ls(a, opts),
        ContextCommand::Use(a) => use_context(a),
        ContextCommand::Inspect(a) => inspect(a, opts),
        ContextCommand::Rm(a) => rm(a, opts),
        ContextCommand::Show => {
            println!("{}", current_name(opts)?);
            Ok(())
        }
        ContextCommand::Update(a) => update(a),
    };
    result.map_err(|e| match e.downcast::<ContextError>() {
        Ok(e) => StatusError::new(1, e.to_string()).into(),
        Err(e) => e,
    })
}

fn check_name(name: &str) -> Result<(), ContextError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest: Vec<char> = chars.collect();
    if !first_ok
        || rest.is_empty()
        || !rest
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(*c))
    {
        return Err(ContextError::BadName(name.to_string()));
    }
    if name == DEFAULT {
        return Err(ContextError::Reserved(name.to_string()));
    }
    Ok(())
}

/// A `--docker` value, parsed: the endpoint's host and TLS files.
#[derive(Debug, Default, PartialEq)]
struct DockerSpec {
    host: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    skip_tls_verify: Option<bool>,
    from: Option<String>,
}

fn parse_docker_spec(value: &str) -> Result<DockerSpec, ContextError> {
    let bad = |reason: String| ContextError::BadEndpoint {
        value: value.to_string(),
        reason,
    };
    let mut spec = DockerSpec::default();
    for field in value.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| bad(format!("{field:?} is not KEY=VALUE")))?;
        match k {
            "host" => {
                Endpoint::parse(v, None).map_err(|e| bad(e.to_string()))?;
                spec.host = Some(v.to_string());
            }
            "ca" => spec.ca = Some(PathBuf::from(v)),
            "cert" => spec.cert = Some(PathBuf::from(v)),
            "key" => spec.key = Some(PathBuf::from(v)),
            "skip-tls-verify" => {
                spec.skip_tls_verify = Some(
                    v.parse::<bool>()
                        .map_err(|_| bad(format!("skip-tls-verify={v:?} is not a boolean")))?,
                )
            }
            "from" => spec.from = Some(v.to_string()),
            _ => return Err(bad(format!("unrecognized config key: {k}"))),
        }
    }
    if spec.cert.is_some() != spec.key.is_some() {
        return Err(bad("cert and key go together".into()));
    }
    Ok(spec)
}

/// The endpoint and TLS files of a context being made or updated.
struct Prepared {
    host: String,
    skip_tls_verify: bool,
    /// File name in the store and its bytes.
    tls: Vec<(&'static str, Vec<u8>)>,
}

/// The endpoint of an existing context (`--from`, or the current one when
/// `create` has no `--docker`), TLS files included.
fn prepare_from(name: &str, opts: &ConnectOptions) -> anyhow::Result<Prepared> {
    if name == DEFAULT {
        let host = default_host(opts.host.as_deref());
        let mut tls = Vec::new();
        if let Some(files) = default_tls(opts)? {
            for (store, path) in [
                ("ca.pem", files.ca),
                ("cert.pem", files.cert),
                ("key.pem", files.key),
            ] {
                if let Some(p) = path {
                    tls.push((store, read_file(&p)?));
                }
            }
            return Ok(Prepared {
                host,
                skip_tls_verify: files.skip_verify,
                tls,
            });
        }
        return Ok(Prepared {
            host,
            skip_tls_verify: false,
            tls,
        });
    }
    let ctx = load(name)?;
    let mut tls = Vec::new();
    for path in ctx.tls_files()? {
        let store = TLS_FILES
            .into_iter()
            .find(|f| path.ends_with(f))
            .unwrap_or("ca.pem");
        tls.push((store, read_file(&path)?));
    }
    Ok(Prepared {
        host: ctx.host(),
        skip_tls_verify: ctx.skip_tls_verify(),
        tls,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, ContextError> {
    std::fs::read(path).map_err(io_error("read", path))
}

fn prepare_spec(
    spec: DockerSpec,
    base: Option<Prepared>,
    opts: &ConnectOptions,
) -> anyhow::Result<Prepared> {
    let mut p = match (spec.from.as_deref(), base) {
        (Some(from), _) => prepare_from(from, opts)?,
        (None, Some(base)) => base,
        (None, None) => Prepared {
            host: String::new(),
            skip_tls_verify: false,
            tls: Vec::new(),
        },
    };
    if let Some(host) = spec.host {
        p.host = host;
    }
    if let Some(skip) = spec.skip_tls_verify {
        p.skip_tls_verify = skip;
    }
    for (store, path) in [
        ("ca.pem", spec.ca),
        ("cert.pem", spec.cert),
        ("key.pem", spec.key),
    ] {
        if let Some(path) = path {
            let bytes = read_file(&path)?;
            p.tls.retain(|(s, _)| *s != store);
            p.tls.push((store, bytes));
        }
    }
    if p.host.is_empty() {
        return Err(ContextError::BadEndpoint {
            value: String::new(),
            reason: "the docker endpoint needs host=URL".into(),
        }
        .into());
    }
    Ok(p)
}

/// Writes a context's meta.json and TLS files (replacing what was there).
fn store(
    name: &str,
    description: &str,
    p: &Prepared,
    old_meta: Option<Value>,
) -> anyhow::Result<()> {
    let mut meta =
        old_meta.unwrap_or_else(|| json!({"Name": name, "Metadata": {}, "Endpoints": {}}));
    let metadata = meta["Metadata"].as_object_mut().map(std::mem::take);
    let mut metadata: Map<String, Value> = metadata.unwrap_or_default();
    if description.is_empty() {
        metadata.remove("Description");
    } else {
        metadata.insert("Description".into(), json!(description));
    }
    meta["Metadata"] = Value::Object(metadata);
    if !meta["Endpoints"].is_object() {
        meta["Endpoints"] = json!({});
    }
    meta["Endpoints"]["docker"] = json!({"Host": p.host, "SkipTLSVerify": p.skip_tls_verify});
    let dir = meta_dir(name)?;
    std::fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
    let tls = tls_dir(name)?;
    let tls_docker = tls.join("docker");
    match std::fs::remove_dir_all(&tls_docker) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("remove", &tls_docker)(e).into()),
    }
    if !p.tls.is_empty() {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tls_docker)
            .map_err(io_error("create", &tls_docker))?;
        for (file, bytes) in &p.tls {
            let path = tls_docker.join(file);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_error("create", &path))?;
            std::io::Write::write_all(&mut f, bytes).map_err(io_error("write", &path))?;
        }
    } else {
        let _ = std::fs::remove_dir(&tls);
    }
    let path = dir.join("meta.json");
    let tmp = dir.join("meta.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&meta)?).map_err(io_error("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_error("write", &path))?;
    Ok(())
}

fn create(a: CreateArgs, opts: &ConnectOptions) -> anyhow::Result<()> {
    check_name(&a.name)?;
    if load(&a.name).is_ok() {
        return Err(ContextError::Exists(a.name).into());
    }
    let p = match (&a.docker, &a.from) {
        (Some(spec), from) => {
            let mut spec = parse_docker_spec(spec)?;
            if spec.from.is_none() {
                spec.from = from.clone();
            }
            prepare_spec(spec, None, opts)?
        }
        (None, Some(from)) => prepare_from(from, opts)?,
        (None, None) => prepare_from(&current_name(opts)?, opts)?,
    };
    // Make sure the endpoint can be used before it is stored.
    Endpoint::parse(&p.host, None)?;
    store(&a.name, a.description.as_deref().unwrap_or(""), &p, None)?;
    println!("{}", a.name);
    eprintln!("Successfully created context {:?}", a.name);
    Ok(())
}

fn update(a: UpdateArgs) -> anyhow::Result<()> {
    check_name(&a.name)?;
    let ctx = load(&a.name)?;
    let base = prepare_from(&a.name, &ConnectOptions::default())?;
    let p = match &a.docker {
        Some(spec) => prepare_spec(
            parse_docker_spec(spec)?,
            Some(base),
            &ConnectOptions::default(),
        )?,
        None => base,
    };
    let description = a.description.unwrap_or_else(|| ctx.description());
    store(&a.name, &description, &p, Some(ctx.meta))?;
    println!("{}", a.name);
    eprintln!("Successfully updated context {:?}", a.name);
    Ok(())
}

fn use_context(a: UseArgs) -> anyhow::Result<()> {
    if a.name != DEFAULT {
        load(&a.name)?;
    }
    let path = crate::auth::config_path()?;
    let mut config = crate::auth::load_config(&path)?;
    if let Some(map) = config.as_object_mut() {
        if a.name == DEFAULT {
            map.remove("currentContext");
        } else {
            map.insert("currentContext".into(), json!(a.name));
        }
    }
    crate::auth::save_config(&path, &config)?;
    println!("{}", a.name);
    eprintln!("Current context is now {:?}", a.name);
    if env("DOCKER_HOST").is_some() {
        eprintln!(
            "Warning: DOCKER_HOST environment variable overrides the active context. To use {:?}, either set the global --context flag, or unset DOCKER_HOST environment variable.",
            a.name
        );
    }
    Ok(())
}

fn rm(a: RmArgs, opts: &ConnectOptions) -> anyhow::Result<()> {
    let current = current_name(opts)?;
    let configured = configured_current();
    let mut errors = Vec::new();
    for name in &a.names {
        if name == DEFAULT {
            errors.push(format!("context {name:?} cannot be removed"));
            continue;
        }
        if load(name).is_err() {
            errors.push(format!("context {name:?} does not exist"));
            continue;
        }
        if *name == current && !a.force {
            errors.push(format!(
                "context {name:?} is in use, set -f flag to force remove"
            ));
            continue;
        }
        if configured.as_deref() == Some(name) {
            let path = crate::auth::config_path()?;
            let mut config = crate::auth::load_config(&path)?;
            if let Some(map) = config.as_object_mut() {
                map.remove("currentContext");
            }
            crate::auth::save_config(&path, &config)?;
        }
        for dir in [meta_dir(name)?, tls_dir(name)?] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("remove {}: {e}", dir.display())),
            }
        }
        println!("{name}");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StatusError::new(1, errors.join("\n")).into())
    }
}

/// Every context as `ls` shows it, the default first.
fn rows(opts: &ConnectOptions) -> anyhow::Result<Vec<Value>> {
    let current = current_name(opts)?;
    let mut rows = vec![json!({
        "Name": DEFAULT,
        "Description": DEFAULT_DESCRIPTION,
        "DockerEndpoint": default_host(opts.host.as_deref()),
        "Current": current == DEFAULT,
        "Error": "",
    })];
    for ctx in list()? {
        rows.push(json!({
            "Name": ctx.name,
            "Description": ctx.description(),
            "DockerEndpoint": ctx.host(),
            "Current": current == ctx.name,
            "Error": "",
        }));
    }
    Ok(rows)
}

fn ls(a: LsArgs, opts: &ConnectOptions) -> anyhow::Result<()> {
    let rows = rows(opts)?;
    let format = if a.quiet {
        Some("{{.Name}}")
    } else {
        a.format.as_deref()
    };
    print_rows(
        format,
        "table {{.Name}}{{if .Current}} *{{end}}\t{{.Description}}\t{{.DockerEndpoint}}\t{{.Error}}",
        &rows,
        &[
            ("Name", "NAME"),
            ("Description", "DESCRIPTION"),
            ("DockerEndpoint", "DOCKER ENDPOINT"),
            ("Error", "ERROR"),
            // Empty, so the header's `{{if .Current}}` adds no star.
            ("Current", ""),
        ],
    )
}

/// What `inspect` shows of a context, in docker's order of fields.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectDoc {
    name: String,
    metadata: Value,
    endpoints: Value,
    #[serde(rename = "TLSMaterial")]
    tls_material: Value,
    storage: Storage,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Storage {
    metadata_path: String,
    #[serde(rename = "TLSPath")]
    tls_path: String,
}

fn inspect_doc(name: &str, opts: &ConnectOptions) -> anyhow::Result<InspectDoc> {
    if name == DEFAULT {
        return Ok(InspectDoc {
            name: DEFAULT.into(),
            metadata: json!({}),
            endpoints: json!({"docker": {"Host": default_host(opts.host.as_deref()), "SkipTLSVerify": false}}),
            tls_material: json!({}),
            storage: Storage {
                metadata_path: "<IN MEMORY>".into(),
                tls_path: "<IN MEMORY>".into(),
            },
        });
    }
    let ctx = load(name)?;
    let files: Vec<String> = ctx
        .tls_files()?
        .iter()
        .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .collect();
    Ok(InspectDoc {
        name: ctx.name.clone(),
        metadata: ctx.meta["Metadata"].clone(),
        endpoints: ctx.meta["Endpoints"].clone(),
        tls_material: if files.is_empty() {
            json!({})
        } else {
            json!({ "docker": files })
        },
        storage: Storage {
            metadata_path: meta_dir(name)?.to_string_lossy().into_owned(),
            tls_path: tls_dir(name)?.to_string_lossy().into_owned(),
        },
    })
}

fn inspect(a: InspectArgs, opts: &ConnectOptions) -> anyhow::Result<()> {
    let names = if a.names.is_empty() {
        vec![current_name(opts)?]
    } else {
        a.names
    };
    let mut docs = Vec::new();
    for name in &names {
        docs.push(inspect_doc(name, opts)?);
    }
    match a
        .format
        .as_deref()
        .filter(|f| !f.is_empty() && *f != "json")
    {
        None => {
            let raw: Vec<Vec<u8>> = docs
                .iter()
                .map(serde_json::to_vec)
                .collect::<Result<_, _>>()?;
            print!("{}", crate::output::json::indented_array(&raw));
        }
        Some(f) => {
            let f = crate::output::template::Format::parse(f)
                .map_err(|e| StatusError::new(1, e.to_string()))?;
            for doc in &docs {
                let text = f
                    .render(&serde_json::to_value(doc)?)
                    .map_err(|e| StatusError::new(1, e.to_string()))?;
                println!("{text}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::context_id;

    #[test]
    fn names_and_ids_are_dockers() {
        assert!(check_name("remote-1").is_ok());
        assert!(check_name("a").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("a/b").is_err());
        assert!(matches!(
            check_name("default"),
            Err(ContextError::Reserved(_))
        ));
        // docker's store: the hex sha256 of the name.
        assert_eq!(
            context_id("default"),
            "37a8eec1ce19687d132fe29051dca629d164e2c4958ba141d5f4133a33f0688f"
        );
    }

    #[test]
    fn docker_endpoint_specs() {
        let spec = parse_docker_spec("host=tcp://10.0.0.1:2376,ca=/c/ca.pem,cert=/c/cert.pem,key=/c/key.pem,skip-tls-verify=true").unwrap();
        assert_eq!(spec.host.as_deref(), Some("tcp://10.0.0.1:2376"));
        assert_eq!(spec.skip_tls_verify, Some(true));
        assert_eq!(spec.key, Some(PathBuf::from("/c/key.pem")));
        assert!(parse_docker_spec("host=ssh://x").is_err());
        assert!(parse_docker_spec("hots=tcp://x:1").is_err());
        assert!(parse_docker_spec("host=tcp://x:1,cert=/c").is_err());
        assert!(parse_docker_spec("host=tcp://x:1,skip-tls-verify=maybe").is_err());
    }
}
