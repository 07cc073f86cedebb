//! The shim's command line, parsed by the binary and written by
//! [`crate::client::spawn_shim`]:
//!
//! ```text
//! berth-shim --runtime PATH --runtime-root DIR --bundle DIR --id ID
//!            --socket PATH --state-dir DIR [--log-file FILE]
//!            [--log-max-size BYTES] [--log-max-files N] [--log-format json|cri]
//!            [--no-log]
//!            [--no-stdin] [--debug] [--trace]
//! ```

use std::ffi::OsString;
use std::path::PathBuf;

use crate::logfile::LogFormat;

/// Name of the container log in the state directory when `--log-file` is
/// not given.
pub const DEFAULT_LOG_FILE: &str = "log.json";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{flag}: {value:?} is not a number")]
    NotANumber { flag: &'static str, value: String },
    #[error("--log-format: {0:?} is not json or cri")]
    BadLogFormat(String),
    #[error("{0} is required")]
    Required(&'static str),
    #[error("invalid container id {0:?}: use letters, digits, '_', '-' and '.' (at most 1024)")]
    BadId(String),
}

/// What a shim is started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The OCI runtime binary (runc's command line).
    pub runtime: PathBuf,
    /// The runtime's `--root`.
    pub runtime_root: PathBuf,
    /// The container's bundle (holding `config.json`).
    pub bundle: PathBuf,
    /// The container id.
    pub id: String,
    /// The control socket to listen on.
    pub socket: PathBuf,
    /// The shim's directory: exit records, pid files, its own log.
    pub state_dir: PathBuf,
    /// The container's output log; `<state_dir>/log.json` when absent.
    pub log_file: Option<PathBuf>,
    /// Rotate the log when it would grow past this size; never when absent.
    pub log_max_size: Option<u64>,
    /// How many log files to keep in all when rotating (Docker's max-file).
    pub log_max_files: u32,
    /// How the log's entries are written (Docker's JSON or the CRI's).
    pub log_format: LogFormat,
    /// Write no container log at all (Docker's `none` log driver): the
    /// output only goes to attached clients.
    pub no_log: bool,
    /// Give the container /dev/null as stdin instead of a pipe.
    pub no_stdin: bool,
    /// Write debug messages to the shim's log (each request and runtime
    /// command with its duration).
    pub debug: bool,
    /// Record the steps of the create (the shim's and the runtime's own)
    /// for the `trace` request (`berth run --trace`).
    pub trace: bool,
}

impl Options {
    /// Options with the required values and the defaults for the rest.
    pub fn new(
        runtime: impl Into<PathBuf>,
        runtime_root: impl Into<PathBuf>,
        bundle: impl Into<PathBuf>,
        id: impl Into<String>,
        socket: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Options {
            runtime: runtime.into(),
            runtime_root: runtime_root.into(),
            bundle: bundle.into(),
            id: id.into(),
            socket: socket.into(),
            state_dir: state_dir.into(),
            log_file: None,
            log_max_size: None,
            log_max_files: 1,
            log_format: LogFormat::Json,
            no_log: false,
            no_stdin: false,
            debug: false,
            trace: false,
        }
    }

    /// The container log's path.
    pub fn log_path(&self) -> PathBuf {
        self.log_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join(DEFAULT_LOG_FILE))
    }

    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, OptionsError> {
        let mut runtime = None;
        let mut runtime_root = None;
        let mut bundle = None;
        let mut id = None;
        let mut socket = None;
        let mut state_dir = None;
        let mut log_file = None;
        let mut log_max_size = None;
        let mut log_max_files = 1;
        let mut log_format = LogFormat::Json;
        let mut no_log = false;
        let mut no_stdin = false;
        let mut debug = false;
        let mut trace = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let text = arg.to_string_lossy().into_owned();
            let (flag, inline) = match text.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
                _ => (text.clone(), None),
            };
            let flag: &'static str = match flag.as_str() {
                "--runtime" => "--runtime",
                "--runtime-root" => "--runtime-root",
                "--bundle" => "--bundle",
                "--id" => "--id",
                "--socket" => "--socket",
                "--state-dir" => "--state-dir",
                "--log-file" => "--log-file",
                "--log-max-size" => "--log-max-size",
                "--log-max-files" => "--log-max-files",
                "--log-format" => "--log-format",
                "--no-stdin" if inline.is_none() => {
                    no_stdin = true;
                    continue;
                }
                "--no-log" if inline.is_none() => {
                    no_log = true;
                    continue;
                }
                "--debug" if inline.is_none() => {
                    debug = true;
                    continue;
                }
                "--trace" if inline.is_none() => {
                    trace = true;
                    continue;
                }
                _ => return Err(OptionsError::Unknown(text)),
            };
            let value: OsString = match inline {
                Some(v) => v.into(),
                None => args.next().ok_or(OptionsError::MissingValue(flag))?,
            };
            let number = |value: &OsString| {
                value
                    .to_str()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| OptionsError::NotANumber {
                        flag,
                        value: value.to_string_lossy().into_owned(),
                    })
            };
            match flag {
                "--runtime" => runtime = Some(PathBuf::from(value)),
                "--runtime-root" => runtime_root = Some(PathBuf::from(value)),
                "--bundle" => bundle = Some(PathBuf::from(value)),
                "--id" => id = Some(value.to_string_lossy().into_owned()),
                "--socket" => socket = Some(PathBuf::from(value)),
                "--state-dir" => state_dir = Some(PathBuf::from(value)),
                "--log-file" => log_file = Some(PathBuf::from(value)),
                "--log-max-size" => log_max_size = Some(number(&value)?),
                "--log-format" => {
                    let name = value.to_string_lossy();
                    log_format = LogFormat::parse(&name)
                        .ok_or_else(|| OptionsError::BadLogFormat(name.into_owned()))?;
                }
                _ => {
                    log_max_files =
                        u32::try_from(number(&value)?).map_err(|_| OptionsError::NotANumber {
                            flag,
                            value: value.to_string_lossy().into_owned(),
                        })?
                }
            }
        }
        let id: String = id.ok_or(OptionsError::Required("--id"))?;
        if !valid_id(&id) {
            return Err(OptionsError::BadId(id));
        }
        Ok(Options {
            runtime: runtime.ok_or(OptionsError::Required("--runtime"))?,
            runtime_root: runtime_root.ok_or(OptionsError::Required("--runtime-root"))?,
            bundle: bundle.ok_or(OptionsError::Required("--bundle"))?,
            id,
            socket: socket.ok_or(OptionsError::Required("--socket"))?,
            state_dir: state_dir.ok_or(OptionsError::Required("--state-dir"))?,
            log_file,
            log_max_size,
            log_max_files,
            log_format,
            no_log,
            no_stdin,
            debug,
            trace,
        })
    }

    /// The arguments that [`Options::parse`] reads back into these options.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut pair = |flag: &str, value: OsString| {
            args.push(flag.into());
            args.push(value);
        };
        pair("--runtime", self.runtime.clone().into());
        pair("--runtime-root", self.runtime_root.clone().into());
        pair("--bundle", self.bundle.clone().into());
        pair("--id", self.id.clone().into());
        pair("--socket", self.socket.clone().into());
        pair("--state-dir", self.state_dir.clone().into());
        if let Some(path) = &self.log_file {
            pair("--log-file", path.clone().into());
        }
        if let Some(size) = self.log_max_size {
            pair("--log-max-size", size.to_string().into());
        }
        pair("--log-max-files", self.log_max_files.to_string().into());
        if self.log_format != LogFormat::Json {
            pair("--log-format", self.log_format.name().into());
        }
        if self.no_log {
            args.push("--no-log".into());
        }
        if self.no_stdin {
            args.push("--no-stdin".into());
        }
        if self.trace {
            args.push("--trace".into());
        }
        if self.debug {
            args.push("--debug".into());
        }
        args
    }
}

/// Whether a container or exec id is safe as a file name and a runtime
/// argument: letters, digits, `_`, `-`, `.`, not starting with `.` or `-`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_arguments() {
        let mut opts = Options::new("/rt", "/root", "/b", "c1", "/s/shim.sock", "/s");
        assert_eq!(Options::parse(opts.to_args()).unwrap(), opts);
        opts.log_file = Some("/logs/c1.json".into());
        opts.log_max_size = Some(1000);
        opts.log_max_files = 3;
        opts.no_stdin = true;
        opts.debug = true;
        assert_eq!(Options::parse(opts.to_args()).unwrap(), opts);
        assert!(!opts.to_args().contains(&OsString::from("--trace")));
        opts.trace = true;
        assert_eq!(Options::parse(opts.to_args()).unwrap(), opts);
        opts.log_format = LogFormat::Cri;
        assert_eq!(Options::parse(opts.to_args()).unwrap(), opts);
        assert_eq!(
            Options::parse(["--log-format", "xml"].map(OsString::from)),
            Err(OptionsError::BadLogFormat("xml".into()))
        );
        opts.no_log = true;
        assert_eq!(Options::parse(opts.to_args()).unwrap(), opts);
        assert_eq!(opts.log_path(), PathBuf::from("/logs/c1.json"));
    }

    #[test]
    fn reports_bad_arguments() {
        let parse = |args: &[&str]| Options::parse(args.iter().map(OsString::from));
        assert_eq!(
            parse(&["--id", "c1", "--bogus"]),
            Err(OptionsError::Unknown("--bogus".into()))
        );
        assert_eq!(parse(&["--id"]), Err(OptionsError::MissingValue("--id")));
        assert_eq!(
            parse(&["--id", "c1"]),
            Err(OptionsError::Required("--runtime"))
        );
        assert_eq!(
            parse(&["--id", "../x"]),
            Err(OptionsError::BadId("../x".into()))
        );
        assert!(matches!(
            parse(&["--log-max-size=ten"]),
            Err(OptionsError::NotANumber { .. })
        ));
    }
}
