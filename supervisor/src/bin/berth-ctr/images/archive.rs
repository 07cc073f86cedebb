//! `berth-ctr images import` and `export`: archives streamed to and from
//! the supervisor in chunks, from a file or stdin, to a file (which appears
//! only when whole) or stdout.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use berth_client::Client;
use berth_proto::images::v1::{ArchiveFormat, ExportRequest, ImportOptions, ImportRequest};
use clap::{Args, ValueEnum};
use futures_util::StreamExt as _;

use crate::output::{rpc, size, write_stdout};
use crate::parse_platform;

/// The size of the data in each message of an import.
const CHUNK: usize = 1 << 20;

#[derive(Args)]
pub struct ImportArgs {
    /// Name for an image the archive does not name
    #[arg(long)]
    name: Option<String>,
    /// Platform to unpack, os/arch[/variant] [default: the supervisor's]
    #[arg(long, value_parser = parse_platform)]
    platform: Option<String>,
    /// Store the content only, without unpacking into snapshots
    #[arg(long)]
    no_unpack: bool,
    /// Archive to read, or - for stdin
    file: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Oci,
    Docker,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Archive format
    #[arg(long, value_enum, default_value = "oci")]
    format: Format,
    /// Platform to export, os/arch[/variant] [default: all (oci), the supervisor's (docker)]
    #[arg(long, value_parser = parse_platform)]
    platform: Option<String>,
    /// Archive to write, or - for stdout
    file: String,
    /// Images to export
    #[arg(required = true)]
    names: Vec<String>,
}

pub async fn import(client: &Client, args: ImportArgs) -> Result<()> {
    let (source, what): (Box<dyn Read + Send>, String) = if args.file == "-" {
        if std::io::stdin().is_terminal() {
            bail!("refusing to read an archive from a terminal: give a file or redirect stdin");
        }
        (Box::new(std::io::stdin()), "stdin".to_string())
    } else {
        let file =
            std::fs::File::open(&args.file).with_context(|| format!("open {}", args.file))?;
        (Box::new(file), args.file.clone())
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    // A plain thread, not spawn_blocking: a read stuck on stdin must not keep
    // the runtime from shutting down when the call fails.
    std::thread::spawn(move || read_chunks(source, tx));
    let (err_tx, err_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    let first = ImportRequest {
        options: Some(ImportOptions {
            name: args.name.unwrap_or_default(),
            platform: args.platform.unwrap_or_default(),
            no_unpack: args.no_unpack,
        }),
        data: Vec::new(),
    };
    let chunks =
        futures_util::stream::unfold((rx, Some(err_tx)), |(mut rx, mut err_tx)| async move {
            match rx.recv().await {
                Some(Ok(data)) => Some((
                    ImportRequest {
                        options: None,
                        data,
                    },
                    (rx, err_tx),
                )),
                Some(Err(e)) => {
                    if let Some(tx) = err_tx.take() {
                        let _ = tx.send(e);
                    }
                    // Never end the stream: a clean end would hand the supervisor
                    // a truncated archive. The call is dropped instead.
                    std::future::pending().await
                }
                None => None,
            }
        });
    let requests = futures_util::stream::iter([first]).chain(chunks);
    let mut images = client.images();
    let imported = tokio::select! {
        result = images.import(requests) => result.map_err(rpc)?.into_inner().images,
        Ok(e) = err_rx => return Err(anyhow::Error::new(e).context(format!("read {what}"))),
    };
    for image in imported {
        let digest = image
            .target
            .as_ref()
            .map(|t| t.digest.as_str())
            .unwrap_or("");
        println!("imported {} ({digest}, {})", image.name, size(image.size));
    }
    Ok(())
}

/// Reads `source` in CHUNK-sized pieces into `tx`, until its end or an error.
fn read_chunks(
    mut source: Box<dyn Read + Send>,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match source.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        // An error means the call ended: nobody wants the rest.
        if tx.blocking_send(Ok(buf)).is_err() || filled < CHUNK {
            return;
        }
    }
}

pub async fn export(client: &Client, args: ExportArgs) -> Result<()> {
    let format = match args.format {
        Format::Oci => ArchiveFormat::Oci,
        Format::Docker => ArchiveFormat::Docker,
    };
    // Opened first, so that a bad path fails before the supervisor works.
    let mut output = Output::create(&args.file)?;
    let request = ExportRequest {
        names: args.names,
        format: format as i32,
        platform: args.platform.unwrap_or_default(),
        unnamed: Vec::new(),
    };
    let mut stream = client
        .images()
        .export(request)
        .await
        .map_err(rpc)?
        .into_inner();
    while let Some(message) = stream.message().await.map_err(rpc)? {
        if !output.write(&message.data)? {
            return Ok(());
        }
    }
    output.commit()
}

/// Where an export goes: stdout, or a file that appears only when whole.
enum Output {
    Stdout,
    File {
        file: std::fs::File,
        temp: PathBuf,
        path: PathBuf,
        done: bool,
    },
}

impl Output {
    fn create(name: &str) -> Result<Output> {
        if name == "-" {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal: give a file or redirect stdout");
            }
            return Ok(Output::Stdout);
        }
        let path = PathBuf::from(name);
        let file_name = path
            .file_name()
            .ok_or_else(|| anyhow!("{name} is not a file name"))?
            .to_string_lossy()
            .into_owned();
        let temp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
        let file =
            std::fs::File::create(&temp).with_context(|| format!("create {}", temp.display()))?;
        Ok(Output::File {
            file,
            temp,
            path,
            done: false,
        })
    }

    /// Writes `data`; false when stdout's reader went away.
    fn write(&mut self, data: &[u8]) -> Result<bool> {
        match self {
            Output::Stdout => write_stdout(data),
            Output::File { file, temp, .. } => {
                file.write_all(data)
                    .with_context(|| format!("write {}", temp.display()))?;
                Ok(true)
            }
        }
    }

    fn commit(mut self) -> Result<()> {
        if let Output::File {
            file,
            temp,
            path,
            done,
        } = &mut self
        {
            file.sync_all()
                .with_context(|| format!("write {}", temp.display()))?;
            std::fs::rename(&*temp, &*path)
                .with_context(|| format!("rename {} to {}", temp.display(), path.display()))?;
            *done = true;
        }
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Output::File {
            temp, done: false, ..
        } = self
        {
            let _ = std::fs::remove_file(&*temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::images::tests::serve;
    use crate::images::ImagesCommand;
    use crate::{Cli, Command};

    #[test]
    fn parses_export_and_labels() {
        let cli = Cli::try_parse_from([
            "berth-ctr",
            "images",
            "export",
            "--format",
            "docker",
            "-",
            "a",
            "b",
        ])
        .unwrap();
        let Command::Images(ImagesCommand::Export(args)) = cli.command else {
            panic!("not an export");
        };
        assert!(matches!(args.format, Format::Docker));
        assert_eq!(args.names, ["a", "b"]);
        assert!(Cli::try_parse_from(["berth-ctr", "images", "export", "out.tar"]).is_err());
        assert!(Cli::try_parse_from(["berth-ctr", "ns", "create", "x", "novalue"]).is_err());
        assert!(Cli::try_parse_from(["berth-ctr", "leases", "create", "--label", "a=b=c"]).is_ok());
    }

    #[tokio::test]
    async fn import_sends_options_then_1mib_chunks() {
        let fake = crate::images::fake::FakeImages::default();
        let (dir, client, server) = serve(fake.clone()).await;
        let archive = dir.path().join("image.tar");
        std::fs::write(&archive, vec![7u8; 2 * CHUNK + CHUNK / 2]).unwrap();
        let args = ImportArgs {
            name: Some("imported:1".into()),
            platform: Some("linux/amd64".into()),
            no_unpack: true,
            file: archive.display().to_string(),
        };
        import(&client, args).await.unwrap();
        assert_eq!(*fake.chunks.lock().unwrap(), [CHUNK, CHUNK, CHUNK / 2]);
        let options = fake.options.lock().unwrap().clone().unwrap();
        assert_eq!(
            (
                options.name.as_str(),
                options.platform.as_str(),
                options.no_unpack
            ),
            ("imported:1", "linux/amd64", true)
        );

        let args = ImportArgs {
            name: None,
            platform: None,
            no_unpack: false,
            file: dir.path().join("none.tar").display().to_string(),
        };
        let err = import(&client, args).await.unwrap_err();
        assert!(format!("{err:#}").starts_with("open "), "{err:#}");
        server.abort();
    }

    #[tokio::test]
    async fn export_file_appears_only_when_whole() {
        let (dir, client, server) = serve(crate::images::fake::FakeImages::default()).await;
        let out = dir.path().join("out").join("image.tar");
        std::fs::create_dir(out.parent().unwrap()).unwrap();
        let args = |names: &[&str]| ExportArgs {
            format: Format::Oci,
            platform: None,
            file: out.display().to_string(),
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        let err = export(&client, args(&["a", "missing"])).await.unwrap_err();
        assert_eq!(format!("{err:#}"), "image \"missing\": not found");
        assert_eq!(std::fs::read_dir(out.parent().unwrap()).unwrap().count(), 0);

        export(&client, args(&["a"])).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"abcdef");
        assert_eq!(std::fs::read_dir(out.parent().unwrap()).unwrap().count(), 1);
        server.abort();
    }
}
