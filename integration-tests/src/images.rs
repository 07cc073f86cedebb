//! OCI images for the supervisor's tests, made at test time from the host's
//! static busybox with `umoci`, and pushed to a [`Registry`] with `skopeo`.
//!
//! [`image_set`] builds, once per test process, one OCI image layout (in a
//! temporary directory removed at exit) holding three tags:
//!
//! - [`LAYERED_TAG`]: a linux/amd64 image of three layers:
//!   1. gzip: the busybox root filesystem plus `/etc/berth-test/` with one of
//!      everything a layer can hold: a regular file (`a.txt`), a hard link
//!      to it (`hard`), a symlink (`sym`), a fifo, a character device (`null`,
//!      1:3), a setuid file, a file with a `user.berth` xattr, a file owned by
//!      1000:1000 with mode 0640 and mtime [`OWNED_MTIME`], `platform`
//!      ("amd64"), and `dir/old.txt` and `gone.txt`, which layer 2 removes;
//!   2. gzip: a whiteout of `gone.txt` ([`WHITEOUT_ENTRY`]) and `dir/`
//!      made opaque ([`OPAQUE_ENTRY`]) with a new `dir/new.txt`;
//!   3. **zstd** ([`ZSTD_LAYER`]): `/data/blob.bin` ([`blob_bin`], 1 MiB of
//!      pseudo-random bytes) and `/etc/berth-test/layer3.txt`.
//! - [`ARM64_TAG`]: a linux/arm64/v8 image of one layer holding only
//!   `/etc/berth-test/platform` ("arm64"); it never runs.
//! - [`INDEX_TAG`]: an image index of the two, with their platforms.
//!
//! What the tools do, and what this module does about it:
//! - umoci 0.4.7 never emits an opaque directory: for a directory deleted
//!   and made again it writes one `.wh.<name>` per file that went
//!   (`dir/.wh.old.txt`). Layer 2 is therefore replaced with a tar written
//!   here by GNU tar (`.wh.gone.txt`, `dir/`, `dir/.wh..wh..opq`,
//!   `dir/new.txt`), which leaves the same tree; the config's diff_id for it
//!   is updated.
//! - umoci 0.4.7 only writes gzip layers: layer 3 is decompressed and
//!   recompressed with `zstd`, and its descriptor (digest, size, media type)
//!   rewritten; its diff_id stays, since the tar is the same.
//! - Config, manifests, the index and `index.json` are then rewritten and
//!   re-hashed here; `umoci gc` drops the blobs nothing refers to any more.
//! - skopeo 1.9.3 copies zstd layers as they are, and [`push`] passes
//!   `--preserve-digests`, so the registry holds exactly these digests. It
//!   cannot write a zstd layer into a docker archive, though:
//!   [`docker_archive`] recompresses to gzip on the way.
//!
//! [`expected_files`] and [`removed_paths`] describe the unpacked
//! [`LAYERED_TAG`] image; [`check_rootfs`] compares a tree against them, and
//! [`unpack_reference`] unpacks an image with GNU tar and the OCI whiteout
//! rules, to check the expectations themselves.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::registry::{require_program, run_with_timeout, Registry};
use crate::{host, make_rootfs, require_root};

/// The three-layer linux/amd64 image.
pub const LAYERED_TAG: &str = "layered";
/// The one-layer linux/arm64/v8 image.
pub const ARM64_TAG: &str = "arm64";
/// The index of the two.
pub const INDEX_TAG: &str = "multi";

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The whiteout in layer 2 that removes `/etc/berth-test/gone.txt`.
pub const WHITEOUT_ENTRY: &str = "etc/berth-test/.wh.gone.txt";
/// The opaque marker in layer 2 that hides layer 1's `/etc/berth-test/dir`.
pub const OPAQUE_ENTRY: &str = "etc/berth-test/dir/.wh..wh..opq";
/// Size of `/data/blob.bin`.
pub const BLOB_BIN_SIZE: usize = 1 << 20;
/// The mtime of `/etc/berth-test/owned`.
pub const OWNED_MTIME: i64 = 1_600_000_000;
/// Longest time one skopeo command may take.
pub const SKOPEO_TIMEOUT: Duration = Duration::from_secs(60);

/// A content descriptor: what a manifest or index says about a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    fn from_json(v: &Value) -> Descriptor {
        Descriptor {
            media_type: v["mediaType"].as_str().unwrap_or_default().to_owned(),
            digest: v["digest"].as_str().expect("descriptor digest").to_owned(),
            size: v["size"].as_u64().expect("descriptor size"),
        }
    }
}

/// One layer: its blob as the manifest lists it, and the digest of its
/// uncompressed tar as the config lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub descriptor: Descriptor,
    pub diff_id: String,
}

/// An image of the set, as its layout holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub tag: String,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Layer>,
    /// The config's `os`, `architecture` and `variant`.
    pub platform: Platform,
}

/// An OCI platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    fn from_json(v: &Value) -> Platform {
        Platform {
            os: v["os"].as_str().unwrap_or_default().to_owned(),
            architecture: v["architecture"].as_str().unwrap_or_default().to_owned(),
            variant: v["variant"].as_str().map(str::to_owned),
        }
    }
}

/// The image index of the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    pub tag: String,
    pub descriptor: Descriptor,
    /// The manifests it lists, in order (amd64, then arm64).
    pub manifests: Vec<(Platform, Descriptor)>,
}

/// An image in an OCI layout, as skopeo names it: `oci:<layout>:<tag>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutRef {
    pub layout: PathBuf,
    pub tag: String,
}

impl LayoutRef {
    /// `oci:<layout>:<tag>`.
    pub fn skopeo_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }
}

/// The images of this test process; see the module documentation.
#[derive(Debug)]
pub struct ImageSet {
    dir: PathBuf,
    layout: PathBuf,
    pub layered: Image,
    pub arm64: Image,
    pub index: Index,
}

impl ImageSet {
    /// The directory holding everything of the set.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The OCI image layout with the three tags.
    pub fn layout(&self) -> &Path {
        &self.layout
    }

    pub fn layered_ref(&self) -> LayoutRef {
        self.layout_ref(LAYERED_TAG)
    }

    pub fn arm64_ref(&self) -> LayoutRef {
        self.layout_ref(ARM64_TAG)
    }

    pub fn index_ref(&self) -> LayoutRef {
        self.layout_ref(INDEX_TAG)
    }

    fn layout_ref(&self, tag: &str) -> LayoutRef {
        LayoutRef {
            layout: self.layout.clone(),
            tag: tag.to_owned(),
        }
    }

    /// The file of a blob in the layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.layout, digest)
    }

    /// The bytes of a blob in the layout.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let path = self.blob_path(digest);
        fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest:?}"));
    layout.join("blobs/sha256").join(hex)
}

/// The directory of the image set of this test process; removed at exit.
static SET_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_set_dir() {
    if let Some(dir) = SET_DIR.get() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// The image set, built on first use in this test process.
pub fn image_set() -> &'static ImageSet {
    static SET: OnceLock<ImageSet> = OnceLock::new();
    SET.get_or_init(build_set)
}

// ---------------------------------------------------------------------------
// Tools

/// `skopeo --insecure-policy ARGS`, with [`SKOPEO_TIMEOUT`]; success or not.
#[track_caller]
pub fn skopeo(args: &[&str]) -> Output {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").args(args);
    run_with_timeout(cmd, SKOPEO_TIMEOUT)
}

/// `skopeo --insecure-policy ARGS`, which must succeed; its stdout.
#[track_caller]
pub fn skopeo_ok(args: &[&str]) -> String {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `--src-creds`/`--dest-creds` style arguments for `registry`:
/// `[flag_creds, user:password]`, or `[flag_no_creds]` when it is open.
fn creds_args(registry: &Registry, side: &str) -> Vec<String> {
    match registry.auth().creds_arg() {
        Some(creds) => vec![format!("--{side}-creds"), creds],
        None => vec![format!("--{side}-no-creds")],
    }
}

/// Pushes an image (all of an index) to `registry` as `repo_tag`
/// (`name:tag`), keeping every digest (`--preserve-digests`, so skopeo
/// fails rather than change a manifest), with the registry's credentials.
#[track_caller]
pub fn push(layout_ref: &LayoutRef, registry: &Registry, repo_tag: &str) {
    let src = layout_ref.skopeo_ref();
    let dest = format!("docker://{}/{repo_tag}", registry.host());
    let creds = creds_args(registry, "dest");
    let mut args = vec![
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
    ];
    args.extend(creds.iter().map(String::as_str));
    args.extend([src.as_str(), dest.as_str()]);
    skopeo_ok(&args);
}

/// Pulls `repo_tag` (all of an index) from `registry` into the OCI layout
/// `dest` under `tag`, with the registry's credentials.
#[track_caller]
pub fn pull_to_layout(registry: &Registry, repo_tag: &str, dest: &Path, tag: &str) {
    let src = format!("docker://{}/{repo_tag}", registry.host());
    let dest = format!("oci:{}:{tag}", dest.display());
    let creds = creds_args(registry, "src");
    let mut args = vec![
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
    ];
    args.extend(creds.iter().map(String::as_str));
    args.extend([src.as_str(), dest.as_str()]);
    skopeo_ok(&args);
}

/// Writes a `docker save` style tarball of the image at `dest`, tagged
/// `reference` (`name:tag`; skopeo writes it normalised, as
/// `docker.io/name:tag`). For the index, skopeo picks the host's platform
/// (linux/amd64). Layers are stored uncompressed, as docker does, so the
/// image ID (the config digest) and diff_ids are those of the layout.
///
/// skopeo 1.9.3 refuses to write a docker archive from a manifest with a
/// zstd layer ("zstd compression is not supported for docker images"), so
/// the image goes through a scratch OCI layout with every layer recompressed
/// to gzip (`--dest-compress-format gzip`) first.
#[track_caller]
pub fn docker_archive(layout_ref: &LayoutRef, dest: &Path, reference: &str) {
    let scratch = tempfile::Builder::new()
        .prefix("berth-docker-archive-")
        .tempdir_in(dest.parent().unwrap_or(Path::new("/tmp")))
        .expect("make scratch dir");
    let gzip_ref = format!("oci:{}:gzip", scratch.path().join("layout").display());
    skopeo_ok(&[
        "copy",
        "--quiet",
        "--dest-compress-format",
        "gzip",
        &layout_ref.skopeo_ref(),
        &gzip_ref,
    ]);
    skopeo_ok(&[
        "copy",
        "--quiet",
        &gzip_ref,
        &format!("docker-archive:{}:{reference}", dest.display()),
    ]);
}

/// Writes the image (all of an index) as an OCI layout tarball at `dest`,
/// tagged `tag`, digests unchanged.
#[track_caller]
pub fn oci_archive(layout_ref: &LayoutRef, dest: &Path, tag: &str) {
    skopeo_ok(&[
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        &layout_ref.skopeo_ref(),
        &format!("oci-archive:{}:{tag}", dest.display()),
    ]);
}

/// `sha256:<hex>` of a file.
pub fn sha256_file(path: &Path) -> String {
    let out = host("sha256sum", &[path.to_str().expect("utf-8 path")]);
    format!(
        "sha256:{}",
        out.split_whitespace().next().expect("sha256sum output")
    )
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sha256sum");
    let mut stdin = child.stdin.take().expect("sha256sum stdin");
    let bytes = bytes.to_vec();
    // A writer thread: sha256sum may not read everything before we read.
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let out = child.wait_with_output().expect("wait for sha256sum");
    writer
        .join()
        .expect("writer thread")
        .expect("write to sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    let text = String::from_utf8_lossy(&out.stdout);
    format!(
        "sha256:{}",
        text.split_whitespace().next().expect("sha256sum output")
    )
}

/// Runs `program args` with its stdout into `out`; it must succeed.
#[track_caller]
fn host_to_file(program: &str, args: &[&str], out: &Path) {
    let file = File::create(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let result = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .output()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    assert!(
        result.status.success(),
        "{program} {args:?} failed ({}): {}",
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
}

/// The value of extended attribute `name` of `path` (not following a
/// symlink), if it has one.
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and live across the call;
    // buf is writable for buf.len() bytes.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// Sets extended attribute `name` of `path`.
fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let c_name = std::ffi::CString::new(name).expect("name without NUL");
    // SAFETY: both strings are NUL-terminated and live across the call;
    // value is readable for value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert!(
        rc == 0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

// ---------------------------------------------------------------------------
// Expected contents

/// What a path of an unpacked image is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file with these bytes.
    File(Vec<u8>),
    Dir,
    /// A symlink to this target.
    Symlink(String),
    /// A hard link to this other path of the image (same inode).
    HardLink(String),
    Fifo,
    CharDevice {
        major: u32,
        minor: u32,
    },
}

/// One path of the unpacked [`LAYERED_TAG`] image and what it must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedFile {
    /// Absolute inside the image: `/etc/berth-test/a.txt`.
    pub path: &'static str,
    pub kind: FileKind,
    /// Permission bits with setuid/setgid/sticky (`0o4755`); not checked
    /// for symlinks.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch, where the image fixes it.
    pub mtime: Option<i64>,
    /// Extended attributes the file must carry.
    pub xattrs: Vec<(&'static str, Vec<u8>)>,
}

fn expected(path: &'static str, kind: FileKind, mode: u32) -> ExpectedFile {
    ExpectedFile {
        path,
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: None,
        xattrs: Vec::new(),
    }
}

const A_TXT: &[u8] = b"alpha\n";
const OLD_TXT: &[u8] = b"old\n";
const GONE_TXT: &[u8] = b"gone\n";
const NEW_TXT: &[u8] = b"new\n";
const SETUID_SH: &[u8] = b"#!/bin/sh\necho setuid\n";
const XATTR_TXT: &[u8] = b"xattr\n";
const OWNED_TXT: &[u8] = b"owned\n";
const LAYER3_TXT: &[u8] = b"layer3\n";
/// Contents of `/etc/berth-test/platform` in the amd64 image.
pub const AMD64_PLATFORM: &[u8] = b"amd64\n";
/// Contents of `/etc/berth-test/platform` in the arm64 image.
pub const ARM64_PLATFORM: &[u8] = b"arm64\n";

/// The 1 MiB of `/data/blob.bin`: xorshift64* from a fixed seed.
pub fn blob_bin() -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(BLOB_BIN_SIZE);
    while out.len() < BLOB_BIN_SIZE {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(BLOB_BIN_SIZE);
    out
}

fn busybox_bytes() -> Vec<u8> {
    let path = std::env::var_os("BERTH_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The paths of the unpacked [`LAYERED_TAG`] image that tests check, with
/// what each must be.
pub fn expected_files() -> Vec<ExpectedFile> {
    use FileKind::*;
    let owned = ExpectedFile {
        uid: 1000,
        gid: 1000,
        mtime: Some(OWNED_MTIME),
        ..expected("/etc/berth-test/owned", File(OWNED_TXT.to_vec()), 0o640)
    };
    let xattr = ExpectedFile {
        xattrs: vec![("user.berth", b"1".to_vec())],
        ..expected("/etc/berth-test/xattr", File(XATTR_TXT.to_vec()), 0o644)
    };
    vec![
        expected("/bin/busybox", File(busybox_bytes()), 0o755),
        expected("/bin/sh", Symlink("busybox".into()), 0o777),
        expected("/etc/berth-test", Dir, 0o755),
        expected("/etc/berth-test/a.txt", File(A_TXT.to_vec()), 0o644),
        expected(
            "/etc/berth-test/hard",
            HardLink("/etc/berth-test/a.txt".into()),
            0o644,
        ),
        expected("/etc/berth-test/sym", Symlink("a.txt".into()), 0o777),
        expected("/etc/berth-test/fifo", Fifo, 0o644),
        expected(
            "/etc/berth-test/null",
            CharDevice { major: 1, minor: 3 },
            0o666,
        ),
        expected("/etc/berth-test/setuid", File(SETUID_SH.to_vec()), 0o4755),
        xattr,
        owned,
        expected(
            "/etc/berth-test/platform",
            File(AMD64_PLATFORM.to_vec()),
            0o644,
        ),
        expected("/etc/berth-test/dir", Dir, 0o755),
        expected("/etc/berth-test/dir/new.txt", File(NEW_TXT.to_vec()), 0o644),
        expected(
            "/etc/berth-test/layer3.txt",
            File(LAYER3_TXT.to_vec()),
            0o644,
        ),
        expected("/data", Dir, 0o755),
        expected("/data/blob.bin", File(blob_bin()), 0o644),
    ]
}

/// Paths an earlier layer of [`LAYERED_TAG`] has and a later one removes.
pub fn removed_paths() -> Vec<&'static str> {
    vec!["/etc/berth-test/gone.txt", "/etc/berth-test/dir/old.txt"]
}

fn dev_major(dev: u64) -> u32 {
    (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as u32
}

fn dev_minor(dev: u64) -> u32 {
    ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32
}

/// Compares the tree at `root` (an unpacked [`LAYERED_TAG`] image) with
/// [`expected_files`] and [`removed_paths`]; one line per difference.
pub fn check_rootfs(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let inside = |p: &str| root.join(p.trim_start_matches('/'));
    for want in expected_files() {
        let path = inside(want.path);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) => {
                problems.push(format!("{}: {e}", want.path));
                continue;
            }
        };
        let ft = meta.file_type();
        let mut found = Vec::new();
        let mut differ = |what: &str, got: String, wanted: String| {
            if got != wanted {
                found.push(format!("{}: {what} is {got}, want {wanted}", want.path));
            }
        };
        match &want.kind {
            FileKind::File(bytes) => {
                differ("type", type_name(&meta), "file".into());
                if ft.is_file() {
                    let got = fs::read(&path).unwrap_or_default();
                    if &got != bytes {
                        differ(
                            "contents",
                            format!("{} other bytes", got.len()),
                            format!("{} bytes", bytes.len()),
                        );
                    }
                }
            }
            FileKind::Dir => differ("type", type_name(&meta), "dir".into()),
            FileKind::Symlink(target) => {
                differ("type", type_name(&meta), "symlink".into());
                let got = fs::read_link(&path).map(|t| t.display().to_string());
                differ(
                    "target",
                    format!("{got:?}"),
                    format!("{:?}", Ok::<_, ()>(target)),
                );
            }
            FileKind::HardLink(other) => {
                let other_meta = fs::symlink_metadata(inside(other));
                let same = other_meta
                    .as_ref()
                    .is_ok_and(|o| o.ino() == meta.ino() && o.dev() == meta.dev());
                differ("hard link", format!("{same}"), "true".into());
                differ(
                    "link count",
                    format!("{}", meta.nlink() >= 2),
                    "true".into(),
                );
            }
            FileKind::Fifo => differ("type", type_name(&meta), "fifo".into()),
            FileKind::CharDevice { major, minor } => {
                differ("type", type_name(&meta), "char device".into());
                differ(
                    "device",
                    format!("{}:{}", dev_major(meta.rdev()), dev_minor(meta.rdev())),
                    format!("{major}:{minor}"),
                );
            }
        }
        if !ft.is_symlink() {
            differ(
                "mode",
                format!("{:o}", meta.mode() & 0o7777),
                format!("{:o}", want.mode),
            );
        }
        differ(
            "owner",
            format!("{}:{}", meta.uid(), meta.gid()),
            format!("{}:{}", want.uid, want.gid),
        );
        if let Some(mtime) = want.mtime {
            differ("mtime", meta.mtime().to_string(), mtime.to_string());
        }
        for (name, value) in &want.xattrs {
            differ(
                &format!("xattr {name}"),
                format!("{:?}", get_xattr(&path, name)),
                format!("{:?}", Some(value)),
            );
        }
        problems.append(&mut found);
    }
    for gone in removed_paths() {
        if fs::symlink_metadata(inside(gone)).is_ok() {
            problems.push(format!("{gone}: present, but a later layer removed it"));
        }
    }
    problems
}

fn type_name(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    let name = if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "char device"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "socket"
    };
    name.to_owned()
}

/// The entry names of a layer's tar (decompressed by its media type).
pub fn layer_entries(layout: &Path, layer: &Descriptor) -> Vec<String> {
    let tar = decompress_layer(layout, layer, &std::env::temp_dir());
    let list = host("tar", &["-tf", tar.path().to_str().expect("utf-8 path")]);
    list.lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_owned())
        .filter(|l| !l.is_empty() && l != ".")
        .collect()
}

/// Decompresses a layer blob of `layout` into a temporary tar file in `dir`.
fn decompress_layer(layout: &Path, layer: &Descriptor, dir: &Path) -> tempfile::NamedTempFile {
    let blob = blob_path(layout, &layer.digest);
    let blob = blob.to_str().expect("utf-8 path");
    let tar = tempfile::Builder::new()
        .prefix("berth-layer-")
        .suffix(".tar")
        .tempfile_in(dir)
        .expect("make layer temp file");
    let program = match layer.media_type.as_str() {
        GZIP_LAYER | "application/vnd.docker.image.rootfs.diff.tar.gzip" => "gzip",
        ZSTD_LAYER => "zstd",
        other => panic!("no decompressor for layer media type {other}"),
    };
    host_to_file(program, &["-dcq", blob], tar.path());
    tar
}

/// Unpacks `image` of `layout` into `dest` the way the OCI image spec says,
/// with GNU tar: for each layer, first `.wh.<name>` removes `<name>` and
/// `.wh..wh..opq` empties its directory, then the layer's other entries are
/// extracted with owners, modes, mtimes and `user.*` xattrs.
pub fn unpack_reference(layout: &Path, image: &Image, dest: &Path) {
    fs::create_dir_all(dest).expect("mkdir unpack destination");
    for layer in &image.layers {
        let tar = decompress_layer(layout, &layer.descriptor, dest.parent().unwrap_or(dest));
        let tar_s = tar.path().to_str().expect("utf-8 path");
        for entry in host("tar", &["-tf", tar_s]).lines() {
            let entry = entry.trim_start_matches("./").trim_end_matches('/');
            let (parent, name) = entry.rsplit_once('/').unwrap_or(("", entry));
            let Some(hidden) = name.strip_prefix(".wh.") else {
                continue;
            };
            let dir = dest.join(parent);
            if hidden == ".wh..opq" {
                for child in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    remove_any(&child.path());
                }
            } else {
                remove_any(&dir.join(hidden));
            }
        }
        host(
            "tar",
            &[
                "-xf",
                tar_s,
                "-C",
                dest.to_str().expect("utf-8 path"),
                "--numeric-owner",
                "--same-owner",
                "--same-permissions",
                "--xattrs",
                "--xattrs-include=user.*",
                "--exclude=.wh.*",
            ],
        );
    }
}

fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).expect("remove whiteout target"),
        Ok(_) => fs::remove_file(path).expect("remove whiteout target"),
        Err(_) => {}
    }
}

// ---------------------------------------------------------------------------
// Building the set

fn build_set() -> ImageSet {
    require_root();
    for (program, package) in [
        ("umoci", "umoci"),
        ("skopeo", "skopeo"),
        ("zstd", "zstd"),
        ("gzip", "gzip"),
        ("tar", "tar"),
        ("sha256sum", "coreutils"),
        ("mknod", "coreutils"),
    ] {
        require_program(program, package);
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-images-")
        .tempdir()
        .expect("make image set temp dir")
        .keep();
    let _ = SET_DIR.set(dir.clone());
    // SAFETY: remove_set_dir is an extern "C" fn taking nothing, which
    // atexit may call at process exit; it only reads a OnceLock.
    unsafe { libc::atexit(remove_set_dir) };

    let layout = dir.join("layout");
    let layout_s = layout.to_str().expect("utf-8 path");
    host("umoci", &["init", "--layout", layout_s]);
    build_layered(&dir, &layout);
    build_arm64(&dir, &layout);
    let layered = read_image(&layout, LAYERED_TAG);
    let arm64 = read_image(&layout, ARM64_TAG);

    let manifests: Vec<Value> = [&layered, &arm64]
        .iter()
        .map(|image| {
            let mut platform = json!({
                "architecture": image.platform.architecture,
                "os": image.platform.os,
            });
            if let Some(variant) = &image.platform.variant {
                platform["variant"] = json!(variant);
            }
            json!({
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": image.manifest.digest,
                "size": image.manifest.size,
                "platform": platform,
            })
        })
        .collect();
    let index_doc = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    });
    let (digest, size) = write_json_blob(&layout, &index_doc);
    set_tag(&layout, INDEX_TAG, INDEX_MEDIA_TYPE, &digest, size);
    host("umoci", &["gc", "--layout", layout_s]);

    let index = read_index(&layout, INDEX_TAG);
    for image in [&layered, &arm64] {
        for blob in std::iter::once(&image.manifest)
            .chain(std::iter::once(&image.config))
            .chain(image.layers.iter().map(|l| &l.descriptor))
        {
            assert!(
                blob_path(&layout, &blob.digest).is_file(),
                "blob {} of {} missing from the layout after umoci gc",
                blob.digest,
                image.tag
            );
        }
    }
    for bundle in ["bundle-layered", "bundle-arm64", "layer2"] {
        let _ = fs::remove_dir_all(dir.join(bundle));
    }
    ImageSet {
        dir,
        layout,
        layered,
        arm64,
        index,
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn write_file(path: &Path, contents: &[u8], mode: u32) {
    crate::write(path, contents);
    chmod(path, mode);
}

fn repack(layout: &Path, tag: &str, bundle: &Path) {
    host(
        "umoci",
        &[
            "repack",
            "--refresh-bundle",
            "--image",
            &format!("{}:{tag}", layout.display()),
            bundle.to_str().expect("utf-8 path"),
        ],
    );
}

fn build_layered(dir: &Path, layout: &Path) {
    let image = format!("{}:{LAYERED_TAG}", layout.display());
    let bundle = dir.join("bundle-layered");
    host("umoci", &["new", "--image", &image]);
    host(
        "umoci",
        &[
            "unpack",
            "--image",
            &image,
            bundle.to_str().expect("utf-8 path"),
        ],
    );
    let rootfs = bundle.join("rootfs");
    let t = rootfs.join("etc/berth-test");

    // Layer 1.
    make_rootfs(&rootfs);
    fs::create_dir_all(t.join("dir")).expect("mkdir etc/berth-test/dir");
    chmod(&t, 0o755);
    chmod(&t.join("dir"), 0o755);
    write_file(&t.join("a.txt"), A_TXT, 0o644);
    write_file(&t.join("dir/old.txt"), OLD_TXT, 0o644);
    write_file(&t.join("gone.txt"), GONE_TXT, 0o644);
    fs::hard_link(t.join("a.txt"), t.join("hard")).expect("hard link");
    symlink("a.txt", t.join("sym")).expect("symlink");
    let path = |name: &str| t.join(name).to_str().expect("utf-8 path").to_owned();
    host("mkfifo", &["-m", "0644", &path("fifo")]);
    host("mknod", &["-m", "0666", &path("null"), "c", "1", "3"]);
    write_file(&t.join("setuid"), SETUID_SH, 0o4755);
    write_file(&t.join("xattr"), XATTR_TXT, 0o644);
    set_xattr(&t.join("xattr"), "user.berth", b"1");
    let owned = t.join("owned");
    write_file(&owned, OWNED_TXT, 0o640);
    chown(&owned, Some(1000), Some(1000)).expect("chown owned");
    File::options()
        .write(true)
        .open(&owned)
        .and_then(|f| f.set_modified(UNIX_EPOCH + Duration::from_secs(OWNED_MTIME as u64)))
        .expect("set mtime of owned");
    write_file(&t.join("platform"), AMD64_PLATFORM, 0o644);
    repack(layout, LAYERED_TAG, &bundle);

    // Layer 2: umoci writes `.wh.gone.txt` and `dir/.wh.old.txt` for this
    // (no opaque marker); the tar is replaced below.
    fs::remove_file(t.join("gone.txt")).expect("rm gone.txt");
    fs::remove_dir_all(t.join("dir")).expect("rm -r dir");
    fs::create_dir(t.join("dir")).expect("mkdir dir");
    chmod(&t.join("dir"), 0o755);
    write_file(&t.join("dir/new.txt"), NEW_TXT, 0o644);
    repack(layout, LAYERED_TAG, &bundle);

    // Layer 3 (recompressed with zstd below).
    fs::create_dir_all(rootfs.join("data")).expect("mkdir data");
    chmod(&rootfs.join("data"), 0o755);
    write_file(&rootfs.join("data/blob.bin"), &blob_bin(), 0o644);
    write_file(&t.join("layer3.txt"), LAYER3_TXT, 0o644);
    repack(layout, LAYERED_TAG, &bundle);

    host(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.cmd",
            "sh",
            "--config.env",
            crate::CONTAINER_PATH,
            "--config.workingdir",
            "/",
        ],
    );

    // Layer 2 as it should be: the whiteout, and the directory made opaque.
    let staging = dir.join("layer2");
    let st = staging.join("etc/berth-test");
    fs::create_dir_all(st.join("dir")).expect("mkdir layer 2 staging");
    chmod(&st.join("dir"), 0o755);
    write_file(&st.join(".wh.gone.txt"), b"", 0o000);
    write_file(&st.join("dir/.wh..wh..opq"), b"", 0o000);
    write_file(&st.join("dir/new.txt"), NEW_TXT, 0o644);
    let layer2_tar = dir.join("layer2.tar");
    host(
        "tar",
        &[
            "-C",
            staging.to_str().expect("utf-8 path"),
            "--no-recursion",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--format=ustar",
            "-cf",
            layer2_tar.to_str().expect("utf-8 path"),
            WHITEOUT_ENTRY,
            "etc/berth-test/dir",
            OPAQUE_ENTRY,
            "etc/berth-test/dir/new.txt",
        ],
    );
    let layer2_gz = dir.join("layer2.tar.gz");
    host_to_file(
        "gzip",
        &["-n", "-c", layer2_tar.to_str().expect("utf-8 path")],
        &layer2_gz,
    );
    let layer2_diff_id = sha256_file(&layer2_tar);
    let (layer2_digest, layer2_size) = add_blob(layout, &layer2_gz);

    rewrite(layout, LAYERED_TAG, |manifest, config| {
        let layers = manifest["layers"].as_array_mut().expect("manifest layers");
        assert_eq!(layers.len(), 3, "umoci made {} layers, not 3", layers.len());
        layers[1] = json!({"mediaType": GZIP_LAYER, "digest": layer2_digest, "size": layer2_size});
        config["rootfs"]["diff_ids"][1] = json!(layer2_diff_id);

        // Layer 3 as zstd: the same tar, so the same diff_id.
        let gz = Descriptor::from_json(&layers[2]);
        assert_eq!(gz.media_type, GZIP_LAYER, "umoci's layer 3");
        let tar = decompress_layer(layout, &gz, dir);
        assert_eq!(
            sha256_file(tar.path()),
            config["rootfs"]["diff_ids"][2].as_str().unwrap_or_default(),
            "diff_id of layer 3"
        );
        let zst = dir.join("layer3.tar.zst");
        host_to_file(
            "zstd",
            &["-q", "-c", tar.path().to_str().expect("utf-8 path")],
            &zst,
        );
        let (digest, size) = add_blob(layout, &zst);
        layers[2] = json!({"mediaType": ZSTD_LAYER, "digest": digest, "size": size});
    });
}

fn build_arm64(dir: &Path, layout: &Path) {
    let image = format!("{}:{ARM64_TAG}", layout.display());
    let bundle = dir.join("bundle-arm64");
    host("umoci", &["new", "--image", &image]);
    host(
        "umoci",
        &[
            "unpack",
            "--image",
            &image,
            bundle.to_str().expect("utf-8 path"),
        ],
    );
    let t = bundle.join("rootfs/etc/berth-test");
    fs::create_dir_all(&t).expect("mkdir etc/berth-test");
    chmod(&bundle.join("rootfs/etc"), 0o755);
    chmod(&t, 0o755);
    write_file(&t.join("platform"), ARM64_PLATFORM, 0o644);
    repack(layout, ARM64_TAG, &bundle);
    rewrite(layout, ARM64_TAG, |_, config| {
        config["architecture"] = json!("arm64");
        config["variant"] = json!("v8");
        config["os"] = json!("linux");
    });
}

/// Moves a file into the layout's blobs; its digest and size.
fn add_blob(layout: &Path, file: &Path) -> (String, u64) {
    let digest = sha256_file(file);
    let size = fs::metadata(file).expect("stat blob").len();
    fs::rename(file, blob_path(layout, &digest)).expect("move blob into the layout");
    (digest, size)
}

fn write_json_blob(layout: &Path, doc: &Value) -> (String, u64) {
    let tmp = layout.join("blobs/new.json");
    fs::write(&tmp, serde_json::to_vec(doc).expect("serialize")).expect("write JSON blob");
    add_blob(layout, &tmp)
}

fn read_json(path: &Path) -> Value {
    let text = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The `index.json` entry of `tag`.
fn tag_descriptor(layout: &Path, tag: &str) -> Value {
    let index = read_json(&layout.join("index.json"));
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["annotations"][REF_NAME] == tag)
        .cloned()
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()))
}

/// Points `tag` in `index.json` at a blob, replacing its old entry.
fn set_tag(layout: &Path, tag: &str, media_type: &str, digest: &str, size: u64) {
    let path = layout.join("index.json");
    let mut index = read_json(&path);
    let manifests = index["manifests"]
        .as_array_mut()
        .expect("index.json manifests");
    manifests.retain(|d| d["annotations"][REF_NAME] != tag);
    manifests.push(json!({
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        "annotations": {REF_NAME: tag},
    }));
    fs::write(&path, serde_json::to_vec(&index).expect("serialize")).expect("write index.json");
}

/// Lets `edit` change the manifest and config of `tag`, then stores both
/// again and re-points the tag.
fn rewrite(layout: &Path, tag: &str, edit: impl FnOnce(&mut Value, &mut Value)) {
    let desc = tag_descriptor(layout, tag);
    let mut manifest = read_json(&blob_path(layout, desc["digest"].as_str().expect("digest")));
    let mut config = read_json(&blob_path(
        layout,
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ));
    edit(&mut manifest, &mut config);
    let (digest, size) = write_json_blob(layout, &config);
    manifest["config"]["digest"] = json!(digest);
    manifest["config"]["size"] = json!(size);
    manifest["mediaType"] = json!(MANIFEST_MEDIA_TYPE);
    let (digest, size) = write_json_blob(layout, &manifest);
    set_tag(layout, tag, MANIFEST_MEDIA_TYPE, &digest, size);
}

fn read_image(layout: &Path, tag: &str) -> Image {
    let desc = tag_descriptor(layout, tag);
    let manifest_desc = Descriptor::from_json(&desc);
    let manifest = read_json(&blob_path(layout, &manifest_desc.digest));
    let config_desc = Descriptor::from_json(&manifest["config"]);
    let config = read_json(&blob_path(layout, &config_desc.digest));
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("config diff_ids");
    let layers: Vec<Layer> = manifest["layers"]
        .as_array()
        .expect("manifest layers")
        .iter()
        .zip(diff_ids)
        .map(|(l, d)| Layer {
            descriptor: Descriptor::from_json(l),
            diff_id: d.as_str().expect("diff_id").to_owned(),
        })
        .collect();
    Image {
        tag: tag.to_owned(),
        manifest: manifest_desc,
        config: config_desc,
        layers,
        platform: Platform::from_json(&config),
    }
}

fn read_index(layout: &Path, tag: &str) -> Index {
    let desc = Descriptor::from_json(&tag_descriptor(layout, tag));
    let doc = read_json(&blob_path(layout, &desc.digest));
    let manifests = doc["manifests"]
        .as_array()
        .expect("index manifests")
        .iter()
        .map(|m| {
            (
                Platform::from_json(&m["platform"]),
                Descriptor::from_json(m),
            )
        })
        .collect();
    Index {
        tag: tag.to_owned(),
        descriptor: desc,
        manifests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_bin_is_deterministic_and_not_trivial() {
        let a = blob_bin();
        assert_eq!(a.len(), BLOB_BIN_SIZE);
        assert_eq!(a, blob_bin());
        assert!(a.iter().filter(|&&b| b == 0).count() < BLOB_BIN_SIZE / 100);
    }

    #[test]
    fn device_numbers_split() {
        // makedev(1, 3) and makedev(259, 70000) as glibc encodes them.
        assert_eq!((dev_major(0x103), dev_minor(0x103)), (1, 3));
        let dev: u64 = ((259 & 0xfff) << 8) | ((70000 & 0xff) | ((70000 & !0xff) << 12));
        assert_eq!((dev_major(dev), dev_minor(dev)), (259, 70000));
    }
}
