//! OOM notification: finds the memory cgroup of the container's init and
//! watches it for the kernel's OOM killer.
//!
//! - cgroup v1 (a line naming the `memory` controller in
//!   `/proc/<pid>/cgroup`): an eventfd registered for `memory.oom_control`
//!   by writing `"<eventfd> <oom_control fd>"` into `cgroup.event_control`.
//! - cgroup v2 (the `0::/path` line, when that cgroup has the memory
//!   controller, i.e. a `memory.events` file): inotify `IN_MODIFY` on
//!   `memory.events`.
//!
//! The hybrid layout (v1 controllers and a v2 tree without them) uses v1:
//! a v1 `memory` line is preferred to the `0::` line. The mount points come
//! from `/proc/self/mountinfo`.
//!
//! A wakeup only says "look again": the number of OOM kills is the increase
//! of the cgroup's `oom_kill` counter, which `memory.oom_control` (v1,
//! Linux 4.13 and later) and `memory.events` (v2) both carry. So an OOM in
//! which the kernel killed nothing of this cgroup, and the wakeup a v1
//! eventfd gets when its cgroup is removed, count for nothing. On a v1
//! kernel without the counter, each eventfd count is one OOM, as the
//! kernel's documentation describes them.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

#[derive(Debug, thiserror::Error)]
pub enum OomError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("make an eventfd: {0}")]
    EventFd(nix::Error),
    #[error("open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("register for OOM notification in {path}: {source}")]
    Register { path: PathBuf, source: io::Error },
    #[error("make an inotify instance: {0}")]
    Inotify(nix::Error),
    #[error("watch {path}: {source}")]
    Watch { path: PathBuf, source: nix::Error },
    #[error("{0} has no oom_kill counter")]
    NoCounter(PathBuf),
}

/// The memory cgroup of a process, as a directory of a mounted hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryCgroup {
    V1(PathBuf),
    V2(PathBuf),
}

impl MemoryCgroup {
    pub fn dir(&self) -> &Path {
        match self {
            MemoryCgroup::V1(dir) | MemoryCgroup::V2(dir) => dir,
        }
    }

    /// The file that holds the `oom_kill` counter.
    fn counter_file(&self) -> PathBuf {
        match self {
            MemoryCgroup::V1(dir) => dir.join("memory.oom_control"),
            MemoryCgroup::V2(dir) => dir.join("memory.events"),
        }
    }
}

/// What `/proc/<pid>/cgroup` says about a process's memory cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcCgroups {
    /// The path in the v1 hierarchy that has the `memory` controller.
    pub v1_memory: Option<String>,
    /// The path in the v2 (unified) hierarchy: the `0::` line.
    pub unified: Option<String>,
}

/// Parses `/proc/<pid>/cgroup`: lines `ID:CONTROLLERS:PATH`, where v1
/// hierarchies list their controllers (`4:memory:/a/b`) and the v2 one is
/// `0::/a/b`.
pub fn parse_proc_cgroup(text: &str) -> ProcCgroups {
    let mut found = ProcCgroups::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            found.unified.get_or_insert_with(|| path.to_owned());
        } else if controllers.split(',').any(|c| c == "memory") {
            found.v1_memory.get_or_insert_with(|| path.to_owned());
        }
    }
    found
}

/// A mounted cgroup file system, from `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    /// The path of the hierarchy that is mounted (`/` unless a cgroup
    /// namespace or a bind mount shows only part of it).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// `cgroup2`, rather than a v1 `cgroup`.
    pub unified: bool,
    /// The super options, which name a v1 hierarchy's controllers
    /// (`rw,memory`).
    pub options: Vec<String>,
}

/// The cgroup mounts in `/proc/<pid>/mountinfo` text, in order. A line is
/// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE
/// SUPER_OPTIONS`, with spaces and the like octal-escaped (`\040`).
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let (root, mount_point) = (fields.get(3)?, fields.get(4)?);
            let mut right = right.split(' ');
            let unified = match right.next()? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let _source = right.next();
            let options = right.next().unwrap_or("");
            Some(CgroupMount {
                root: unescape(root),
                mount_point: unescape(mount_point),
                unified,
                options: options.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The directory of cgroup `path` under the first of `mounts` that shows it.
fn resolve<'a>(mut mounts: impl Iterator<Item = &'a CgroupMount>, path: &str) -> Option<PathBuf> {
    mounts.find_map(|m| {
        let relative = Path::new(path).strip_prefix(&m.root).ok()?;
        Some(m.mount_point.join(relative))
    })
}

/// Where the memory cgroup of a process is, from its `/proc/<pid>/cgroup`
/// and `/proc/self/mountinfo`: the v1 `memory` hierarchy if the process is
/// in one, else its v2 cgroup (which may lack the memory controller: the
/// caller checks for `memory.events`). `None` if the hierarchy is not
/// mounted where this process can see the cgroup.
pub fn find_memory_cgroup(proc_cgroup: &str, mountinfo: &str) -> Option<MemoryCgroup> {
    let cgroups = parse_proc_cgroup(proc_cgroup);
    let mounts = parse_cgroup_mounts(mountinfo);
    if let Some(path) = &cgroups.v1_memory {
        let memory = mounts
            .iter()
            .filter(|m| !m.unified && m.options.iter().any(|o| o == "memory"));
        return resolve(memory, path).map(MemoryCgroup::V1);
    }
    let path = cgroups.unified.as_ref()?;
    resolve(mounts.iter().filter(|m| m.unified), path).map(MemoryCgroup::V2)
}

/// The `oom_kill` counter in the text of `memory.oom_control` (v1) or
/// `memory.events` (v2), lines of `KEY VALUE`.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        if key != "oom_kill" {
            return None;
        }
        value.trim().parse().ok()
    })
}

/// The memory cgroup of process `pid` that can be watched: `None` if it
/// has none (no v1 memory hierarchy, and a v2 cgroup without the memory
/// controller).
pub fn locate(pid: i32) -> Result<Option<MemoryCgroup>, OomError> {
    let read =
        |path: PathBuf| fs::read_to_string(&path).map_err(|source| OomError::Read { path, source });
    let proc_cgroup = read(PathBuf::from(format!("/proc/{pid}/cgroup")))?;
    let mountinfo = read(PathBuf::from("/proc/self/mountinfo"))?;
    Ok(
        find_memory_cgroup(&proc_cgroup, &mountinfo).filter(|cgroup| match cgroup {
            MemoryCgroup::V1(_) => true,
            MemoryCgroup::V2(dir) => dir.join("memory.events").is_file(),
        }),
    )
}

/// How the kernel wakes the watch.
enum Notify {
    EventFd(EventFd),
    Inotify(Inotify),
}

/// What one look at the cgroup found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomCheck {
    /// OOM kills since the last look.
    pub kills: u64,
    /// The cgroup is gone: stop watching.
    pub gone: bool,
}

/// A memory cgroup watched for OOM kills; its descriptor goes in the poll
/// loop, readable when there may be news.
pub struct OomWatch {
    cgroup: MemoryCgroup,
    notify: Notify,
    /// The `oom_kill` counter last read; `None` on a v1 kernel without it
    /// (each eventfd count is then one OOM).
    kills: Option<u64>,
}

impl OomWatch {
    pub fn open(cgroup: MemoryCgroup) -> Result<Self, OomError> {
        let counter_file = cgroup.counter_file();
        let notify = match &cgroup {
            MemoryCgroup::V1(dir) => {
                let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .map_err(OomError::EventFd)?;
                // The kernel takes what it needs from the control file while
                // it registers the event; it need not stay open after.
                let control = File::open(&counter_file).map_err(|source| OomError::Open {
                    path: counter_file.clone(),
                    source,
                })?;
                let event_control = dir.join("cgroup.event_control");
                let line = format!("{} {}", eventfd.as_raw_fd(), control.as_raw_fd());
                fs::write(&event_control, line).map_err(|source| OomError::Register {
                    path: event_control,
                    source,
                })?;
                Notify::EventFd(eventfd)
            }
            MemoryCgroup::V2(_) => {
                let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
                    .map_err(OomError::Inotify)?;
                inotify
                    .add_watch(&counter_file, AddWatchFlags::IN_MODIFY)
                    .map_err(|source| OomError::Watch {
                        path: counter_file.clone(),
                        source,
                    })?;
                Notify::Inotify(inotify)
            }
        };
        // Read after the watch is set, so no kill falls between the two.
        let text = fs::read_to_string(&counter_file).map_err(|source| OomError::Read {
            path: counter_file.clone(),
            source,
        })?;
        let kills = parse_oom_kill(&text);
        if kills.is_none() && matches!(cgroup, MemoryCgroup::V2(_)) {
            return Err(OomError::NoCounter(counter_file));
        }
        Ok(OomWatch {
            cgroup,
            notify,
            kills,
        })
    }

    pub fn cgroup(&self) -> &Path {
        self.cgroup.dir()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.notify {
            Notify::EventFd(fd) => fd.as_fd(),
            Notify::Inotify(fd) => fd.as_fd(),
        }
    }

    /// Takes the pending wakeups and counts the OOM kills since the last
    /// look, without blocking.
    pub fn check(&mut self) -> OomCheck {
        let woken = self.drain();
        let text = match fs::read_to_string(self.cgroup.counter_file()) {
            Ok(text) => text,
            // Removed (ENOENT, or ENODEV for a file left open): nothing more
            // will happen there.
            Err(_) => {
                return OomCheck {
                    kills: 0,
                    gone: true,
                }
            }
        };
        let kills = match (self.kills, parse_oom_kill(&text)) {
            (Some(before), Some(now)) => {
                self.kills = Some(now);
                now.saturating_sub(before)
            }
            (None, _) => woken,
            (Some(_), None) => 0,
        };
        OomCheck { kills, gone: false }
    }

    /// Empties the descriptor; how many wakeups it held.
    fn drain(&self) -> u64 {
        let mut woken = 0u64;
        loop {
            let read = match &self.notify {
                Notify::EventFd(fd) => fd.read(),
                Notify::Inotify(fd) => fd.read_events().map(|events| events.len() as u64),
            };
            match read {
                Ok(0) => break,
                Ok(n) => woken = woken.saturating_add(n),
                Err(Errno::EINTR) => continue,
                // EAGAIN: empty.
                Err(_) => break,
            }
        }
        woken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/berth-test/c1
5:devices:/berth-test/c1
4:memory:/berth-test/c1
2:cpu,cpuacct:/berth-test/c1
0::/
";

    const HYBRID_MOUNTINFO: &str = "\
23 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn proc_cgroup_lines_give_the_v1_memory_and_unified_paths() {
        assert_eq!(
            parse_proc_cgroup(HYBRID_CGROUP),
            ProcCgroups {
                v1_memory: Some("/berth-test/c1".into()),
                unified: Some("/".into()),
            }
        );
        // v2 only; a path may hold colons.
        assert_eq!(
            parse_proc_cgroup("0::/system.slice/a:b.scope\n"),
            ProcCgroups {
                v1_memory: None,
                unified: Some("/system.slice/a:b.scope".into()),
            }
        );
        // `memory` is a whole controller name, not a substring.
        assert_eq!(
            parse_proc_cgroup("3:name=memoryish:/x\n\ngarbage\n"),
            ProcCgroups::default()
        );
        assert_eq!(
            parse_proc_cgroup("6:cpuset,memory:/y\n")
                .v1_memory
                .as_deref(),
            Some("/y")
        );
    }

    #[test]
    fn mountinfo_gives_the_cgroup_mounts() {
        let mounts = parse_cgroup_mounts(HYBRID_MOUNTINFO);
        assert_eq!(mounts.len(), 3, "{mounts:?}");
        assert_eq!(
            mounts[1],
            CgroupMount {
                root: "/".into(),
                mount_point: "/sys/fs/cgroup/memory".into(),
                unified: false,
                options: vec!["rw".into(), "memory".into()],
            }
        );
        assert!(mounts[2].unified);
        // Escaped spaces; optional fields of any number.
        let line = r"50 23 0:40 /a\040b /mnt/cg\040v2 rw shared:3 master:2 - cgroup2 none rw";
        let mounts = parse_cgroup_mounts(line);
        assert_eq!(mounts[0].root, PathBuf::from("/a b"));
        assert_eq!(mounts[0].mount_point, PathBuf::from("/mnt/cg v2"));
        assert!(parse_cgroup_mounts("short line - cgroup2").is_empty());
    }

    #[test]
    fn the_hybrid_layout_uses_the_v1_memory_hierarchy() {
        assert_eq!(
            find_memory_cgroup(HYBRID_CGROUP, HYBRID_MOUNTINFO),
            Some(MemoryCgroup::V1(
                "/sys/fs/cgroup/memory/berth-test/c1".into()
            ))
        );
        // A v1 memory line whose hierarchy is not mounted: nothing, not v2.
        let no_memory_mount: String = HYBRID_MOUNTINFO
            .lines()
            .filter(|l| !l.contains("memory"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(find_memory_cgroup(HYBRID_CGROUP, &no_memory_mount), None);
    }

    #[test]
    fn a_unified_layout_uses_the_v2_cgroup() {
        let mountinfo = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_memory_cgroup("0::/berth-test/c1\n", mountinfo),
            Some(MemoryCgroup::V2("/sys/fs/cgroup/berth-test/c1".into()))
        );
        // A mount of part of the hierarchy (a cgroup namespace's view).
        let mountinfo = "30 23 0:26 /berth /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_memory_cgroup("0::/berth/c1\n", mountinfo),
            Some(MemoryCgroup::V2("/sys/fs/cgroup/c1".into()))
        );
        // Paths match by component: /berthx is not under /berth.
        assert_eq!(find_memory_cgroup("0::/berthx/c1\n", mountinfo), None);
        assert_eq!(find_memory_cgroup("", mountinfo), None);
    }

    #[test]
    fn the_oom_kill_counter_is_read_from_either_file() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_oom_kill(v1), Some(2));
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v2), Some(1));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
        assert_eq!(parse_oom_kill("oom_kill many\n"), None);
    }
}
