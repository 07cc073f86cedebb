//! `berth-ctr snapshots`: prepare, view, commit, list, measure, mount and
//! diff snapshots, list their changes and export them, through the
//! Snapshots service.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use berth_client::Client;
use berth_proto::types::v1::Mount;
use clap::{Args, Subcommand};

use crate::output::{emit, for_each, print_table, rpc, size};

#[derive(Subcommand)]
pub enum SnapshotsCommand {
    /// List snapshots
    #[command(visible_alias = "list")]
    Ls,
    /// Show the disk usage of one or all snapshots
    Usage {
        /// Snapshot [default: all]
        key: Option<String>,
    },
    /// Create a writable snapshot
    Prepare(SnapshotArgs),
    /// Create a read-only snapshot
    View(SnapshotArgs),
    /// Commit an active snapshot as NAME
    Commit {
        /// Name of the committed snapshot
        name: String,
        /// Active snapshot to commit
        key: String,
    },
    /// Remove snapshots
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Snapshot keys
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the mount commands that assemble a snapshot at TARGET
    Mounts {
        /// Directory to mount on
        target: String,
        /// Snapshot
        key: String,
    },
    /// Store a snapshot's changes as a layer and print its descriptor
    Diff {
        /// Snapshot whose changes against its parent become the layer
        key: String,
        /// Layer media type [default: application/vnd.oci.image.layer.v1.tar+gzip]
        #[arg(long)]
        media_type: Option<String>,
    },
    /// List the paths a snapshot changed, as docker diff does (C, A, D)
    Changes {
        /// Snapshot
        key: String,
    },
    /// Write a tar of a snapshot's whole filesystem to stdout, as docker export does
    Export {
        /// Snapshot
        key: String,
    },
}

#[derive(Args)]
pub struct SnapshotArgs {
    /// Key of the new snapshot
    key: String,
    /// Committed snapshot to start from [default: empty]
    parent: Option<String>,
    /// Print the mount commands that assemble it at TARGET
    #[arg(long)]
    target: Option<String>,
}

pub async fn handle(client: &Client, cmd: SnapshotsCommand) -> Result<()> {
    use berth_proto::snapshots::v1::{
        ChangeKind, ChangesRequest, CommitSnapshotRequest, DiffRequest, ExportRequest, Kind,
        ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
        UsageRequest, ViewSnapshotRequest,
    };
    let mut snapshots = client.snapshots();
    match cmd {
        SnapshotsCommand::Ls => {
            let mut infos = snapshots
                .list(ListSnapshotsRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .info;
            infos.sort_by(|a, b| a.name.cmp(&b.name));
            let rows = infos.into_iter().map(|info| {
                let kind = match info.kind() {
                    Kind::View => "View",
                    Kind::Active => "Active",
                    Kind::Committed => "Committed",
                    Kind::Unknown => "Unknown",
                };
                vec![info.name, info.parent, kind.to_string()]
            });
            print_table(&["KEY", "PARENT", "KIND"], rows);
            Ok(())
        }
        SnapshotsCommand::Usage { key } => {
            let keys = match key {
                Some(key) => vec![key],
                None => {
                    let mut infos = snapshots
                        .list(ListSnapshotsRequest {})
                        .await
                        .map_err(rpc)?
                        .into_inner()
                        .info;
                    infos.sort_by(|a, b| a.name.cmp(&b.name));
                    infos.into_iter().map(|info| info.name).collect()
                }
            };
            let mut rows = Vec::new();
            for key in keys {
                let usage = snapshots
                    .usage(UsageRequest { key: key.clone() })
                    .await
                    .map_err(|s| rpc(s).context(key.clone()))?
                    .into_inner();
                rows.push(vec![key, size(usage.size), usage.inodes.to_string()]);
            }
            print_table(&["KEY", "SIZE", "INODES"], rows);
            Ok(())
        }
        SnapshotsCommand::Prepare(args) => {
            let request = PrepareSnapshotRequest {
                key: args.key,
                parent: args.parent.unwrap_or_default(),
                labels: HashMap::new(),
            };
            let mounts = snapshots.prepare(request).await.map_err(rpc)?;
            show_mounts(args.target, &mounts.into_inner().mounts);
            Ok(())
        }
        SnapshotsCommand::View(args) => {
            let request = ViewSnapshotRequest {
                key: args.key,
                parent: args.parent.unwrap_or_default(),
                labels: HashMap::new(),
            };
            let mounts = snapshots.view(request).await.map_err(rpc)?;
            show_mounts(args.target, &mounts.into_inner().mounts);
            Ok(())
        }
        SnapshotsCommand::Commit { name, key } => {
            let request = CommitSnapshotRequest {
                name,
                key,
                labels: HashMap::new(),
            };
            snapshots.commit(request).await.map_err(rpc)?;
            Ok(())
        }
        SnapshotsCommand::Rm { keys } => {
            for_each(keys, |key| {
                let mut snapshots = snapshots.clone();
                async move {
                    snapshots
                        .remove(RemoveSnapshotRequest { key })
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        SnapshotsCommand::Mounts { target, key } => {
            let mounts = snapshots
                .mounts(MountsRequest { key })
                .await
                .map_err(rpc)?
                .into_inner()
                .mounts;
            emit(&mount_commands(&target, &mounts));
            Ok(())
        }
        SnapshotsCommand::Diff { key, media_type } => {
            let request = DiffRequest {
                key,
                media_type: media_type.unwrap_or_default(),
                labels: HashMap::new(),
            };
            let response = snapshots.diff(request).await.map_err(rpc)?.into_inner();
            let diff = response
                .diff
                .ok_or_else(|| anyhow!("the supervisor returned no descriptor"))?;
            let mut descriptor = serde_json::json!({
                "mediaType": diff.media_type,
                "digest": diff.digest,
                "size": diff.size,
            });
            if !diff.annotations.is_empty() {
                descriptor["annotations"] = serde_json::json!(diff.annotations);
            }
            let text = serde_json::to_string_pretty(&descriptor).context("encode descriptor")?;
            emit(&format!("{text}\n"));
            eprintln!("diff id: {}", response.diff_id);
            Ok(())
        }
        SnapshotsCommand::Changes { key } => {
            let changes = snapshots
                .changes(ChangesRequest { key })
                .await
                .map_err(rpc)?
                .into_inner()
                .changes;
            let mut text = String::new();
            for c in changes {
                let letter = match c.kind() {
                    ChangeKind::ChangeModified => 'C',
                    ChangeKind::ChangeAdded => 'A',
                    ChangeKind::ChangeDeleted => 'D',
                };
                let _ = writeln!(text, "{letter} {}", c.path);
            }
            emit(&text);
            Ok(())
        }
        SnapshotsCommand::Export { key } => {
            use std::io::Write as _;
            let mut stream = snapshots
                .export(ExportRequest { key })
                .await
                .map_err(rpc)?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.message().await.map_err(rpc)? {
                out.write_all(&chunk.data)
                    .context("write the tar to stdout")?;
            }
            out.flush().context("write the tar to stdout")?;
            Ok(())
        }
    }
}

/// The mount(8) commands that assemble `mounts` at `target`, as `ctr
/// snapshots mounts` prints them.
/// With `--target`, prints the commands that mount `mounts` there.
fn show_mounts(target: Option<String>, mounts: &[Mount]) {
    if let Some(target) = target {
        emit(&mount_commands(&target, mounts));
    }
}

fn mount_commands(target: &str, mounts: &[Mount]) -> String {
    let mut out = String::new();
    for m in mounts {
        let dir = if m.target.is_empty() {
            target.to_string()
        } else {
            Path::new(target)
                .join(m.target.trim_start_matches('/'))
                .display()
                .to_string()
        };
        let mut options = m.options.clone();
        let command = if m.r#type == "bind" {
            // mount(8) has no "bind" type: the option makes it a bind mount.
            if !options.iter().any(|o| o == "bind" || o == "rbind") {
                options.insert(0, "bind".to_string());
            }
            "mount".to_string()
        } else {
            format!("mount -t {}", shell_quote(&m.r#type))
        };
        let _ = write!(out, "{command} ");
        if !options.is_empty() {
            let _ = write!(out, "-o {} ", shell_quote(&options.join(",")));
        }
        let _ = writeln!(out, "{} {}", shell_quote(&m.source), shell_quote(&dir));
    }
    out
}

fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-:=,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_commands_like_ctr() {
        let mounts = vec![
            Mount {
                r#type: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: vec![
                    "lowerdir=/l/1:/l/2".into(),
                    "upperdir=/u".into(),
                    "workdir=/w".into(),
                ],
            },
            Mount {
                r#type: "bind".into(),
                source: "/var/lib/x y".into(),
                target: String::new(),
                options: vec!["ro".into(), "rbind".into()],
            },
        ];
        assert_eq!(
            mount_commands("/tmp/t", &mounts),
            "mount -t overlay -o lowerdir=/l/1:/l/2,upperdir=/u,workdir=/w overlay /tmp/t\n\
             mount -o ro,rbind '/var/lib/x y' /tmp/t\n"
        );
    }
}
