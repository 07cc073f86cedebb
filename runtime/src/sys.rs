//! The few system calls that have no safe wrapper in `nix`, `caps` or `std`.
//!
//! Every `unsafe` block of the runtime lives here, each with the reason its
//! invariants hold; the rest of the crate calls the safe functions below.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub mod mount;
pub mod sched;

/// What `clone_process` returned in the calling process.
pub enum Forked {
    /// We are the new process.
    Child,
    /// We are the caller; this is the new process's pid.
    Parent(i32),
}

/// The kernel's `struct clone_args` for clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Creates a new process the way `fork` does, optionally in new namespaces
/// (`flags` holds `CLONE_NEW*` bits) and born inside the cgroup v2
/// directory `cgroup` (CLONE_INTO_CGROUP), with SIGCHLD sent to us when it
/// exits. Returns whether the child was placed in that cgroup: kernels
/// without clone3 get a plain clone, and the caller must move the child.
///
/// The runtime never starts threads, so the child is a faithful copy of a
/// single-threaded process: no lock can be held by a thread that does not
/// exist in the child, and the child may allocate and run ordinary Rust code
/// until it execs (as youki's init does). Callers must keep it that way.
pub fn clone_process(
    flags: libc::c_ulong,
    cgroup: Option<BorrowedFd<'_>>,
) -> io::Result<(Forked, bool)> {
    if let Some(fd) = cgroup {
        let mut args = CloneArgs {
            flags: flags | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 reads `size` bytes of `args`, which lives on our
        // stack for the call. With a zero stack and no CLONE_VM it behaves
        // like fork (see above); no tid, pidfd or tls pointers are set.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match ret {
            0 => return Ok((Forked::Child, true)),
            pid if pid > 0 => return Ok((Forked::Parent(pid as i32), true)),
            _ => {
                let err = io::Error::last_os_error();
                // No clone3, or no CLONE_INTO_CGROUP: fall back below.
                if !matches!(
                    err.raw_os_error(),
                    Some(libc::ENOSYS) | Some(libc::E2BIG) | Some(libc::EINVAL)
                ) {
                    return Err(err);
                }
            }
        }
    }
    // SAFETY: clone without CLONE_VM and with a null stack behaves like fork:
    // the child gets a copy-on-write copy of our address space and continues
    // from this call. The process is single-threaded (see above), so the copy
    // is consistent. Null parent/child tid and tls pointers are allowed since
    // CLONE_PARENT_SETTID, CLONE_CHILD_SETTID and CLONE_SETTLS are not set.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok((Forked::Child, false)),
        pid => Ok((Forked::Parent(pid as i32), false)),
    }
}

/// Ends the current process at once, without running atexit handlers or
/// flushing buffers copied from the parent at clone time.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}

/// Marks every descriptor from `first` up as close-on-exec, so that nothing
/// the runtime opened leaks into the container process (CVE-2024-21626).
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range takes two integers and a flag word; with
    // CLOSE_RANGE_CLOEXEC it only sets a flag on descriptors and closes none.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack the flag: walk /proc/self/fd instead.
    let dir = std::fs::read_dir("/proc/self/fd")?;
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd: &RawFd| *fd >= first as RawFd)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD only changes the flags of a descriptor number; a
        // number that is no longer open yields EBADF, which we ignore.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Duplicates `fd` onto the descriptor number `target` (0, 1 or 2 for stdio).
pub fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup3 only manipulates the descriptor table; `fd` is a valid
    // borrowed descriptor and `target` is a plain number we mean to replace.
    let ret = unsafe { libc::dup3(fd.as_raw_fd(), target, 0) };
    if ret == -1 && fd.as_raw_fd() != target {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `fd`, a terminal, the controlling terminal of this session.
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a terminal's window size.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct, which lives on our stack
    // for the duration of the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a terminal's window size, if `fd` is a terminal.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize struct into our stack variable.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (ret == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Opens the peer (slave) end of the pseudo-terminal whose master is `master`,
/// without looking it up by path (TIOCGPTPEER, Linux 4.13+).
pub fn open_pty_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags as its integer argument and
    // returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Unlocks a pseudo-terminal master and returns its pty number.
pub fn unlock_pty(master: BorrowedFd<'_>) -> io::Result<u32> {
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from our stack variable.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int into our stack variable.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(number)
}

/// Sets the domain name of the current UTS namespace.
pub fn set_domainname(name: &str) -> io::Result<()> {
    let bytes = name.as_bytes();
    // SAFETY: setdomainname reads exactly `len` bytes from a valid slice.
    let ret = unsafe { libc::setdomainname(bytes.as_ptr().cast(), bytes.len()) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resets every catchable signal to its default action and unblocks all
/// signals. The Rust runtime ignores SIGPIPE, and an ignored disposition
/// survives exec: a container process must not inherit that.
pub fn reset_signals() {
    for signal in 1..libc::SIGRTMIN() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code; an invalid
        // signal number yields EINVAL, which we ignore.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    let empty = nix::sys::signal::SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&empty),
        None,
    );
}

/// Makes this process a subreaper: orphaned descendants are re-parented to
/// it rather than to the host's init, so `run` can reap them.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks for SIGKILL to be sent to us when our parent dies.
pub fn set_parent_death_signal(signal: i32) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes an integer signal number.
    let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Replaces the process image; returns only on failure.
pub fn exec(path: &CString, args: &[CString], env: &[CString]) -> io::Error {
    match nix::unistd::execve(path, args, env) {
        Ok(never) => match never {},
        Err(errno) => io::Error::from(errno),
    }
}

/// Sets the umask of the calling process.
pub fn set_umask(mask: u32) {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
}

/// Installs a seccomp BPF program on the calling thread with `flags`
/// (SECCOMP_FILTER_FLAG_*). Unlike seccompiler's apply_filter, this does not
/// set no_new_privs: the caller decides. With
/// SECCOMP_FILTER_FLAG_NEW_LISTENER, returns the notify listener.
pub fn install_seccomp(
    program: &[seccompiler::sock_filter],
    flags: libc::c_ulong,
) -> io::Result<Option<OwnedFd>> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const seccompiler::sock_filter,
    }
    let len = libc::c_ushort::try_from(program.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) copies `len` instructions from
    // `filter`, which points into `program`, alive for the call; seccompiler's
    // sock_filter is repr(C) with the kernel's layout.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const SockFprog,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
        // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the kernel returns a
        // new descriptor (the notify listener), owned by nobody else.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as RawFd) }));
    }
    Ok(None)
}

/// A pidfd for process `pid` (pidfd_open(2), Linux 5.3): it polls readable
/// once the process has exited, zombie or reaped.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// A memfd holding `bytes`, sealed against every change (write, grow,
/// shrink, further seals), that can be executed.
pub fn sealed_memfd(name: &std::ffi::CStr, bytes: &[u8]) -> io::Result<OwnedFd> {
    const MFD_EXEC: libc::c_uint = 0x10;
    let create = |flags: libc::c_uint| {
        // SAFETY: memfd_create reads a NUL-terminated name that lives for
        // the call and returns a new descriptor or -1.
        unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), flags) }
    };
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    let mut fd = create(base | MFD_EXEC);
    if fd == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Kernels before 6.3 know no MFD_EXEC; their memfds are executable.
        fd = create(base);
    }
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, bytes)?;
    let fd = OwnedFd::from(file);
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS takes an integer argument.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Executes the file open at `fd` (through /proc/self/fd, so that only
/// execve need be allowed by a seccomp profile; with execveat when /proc is
/// not mounted). Returns only on failure.
pub fn exec_fd(fd: BorrowedFd<'_>, args: &[CString], env: &[CString]) -> io::Error {
    if let Ok(path) = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        let err = exec(&path, args, env);
        if err.raw_os_error() != Some(libc::ENOENT) {
            return err;
        }
    }
    let empty = c"";
    match nix::unistd::execveat(fd, empty, args, env, nix::fcntl::AtFlags::AT_EMPTY_PATH) {
        Ok(never) => match never {},
        Err(errno) => io::Error::from(errno),
    }
}

/// Opens `path` (relative) beneath the directory `root` as an O_PATH
/// descriptor, with the kernel resolving every component inside `root`:
/// `..` and absolute symlinks cannot leave it (openat2 RESOLVE_IN_ROOT), and
/// /proc magic links are refused. Kernels before 5.6 lack openat2: there,
/// `path` must already have been resolved inside the root by the caller.
pub fn open_in_root(root: BorrowedFd<'_>, path: &std::path::Path) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let rel = if path.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        path
    };
    let cpath = CString::new(rel.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads the NUL-terminated path and `size` bytes of
    // `how`, both alive for the call, and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            cpath.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a fresh descriptor from the kernel, owned by nobody else.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // SAFETY: openat with O_PATH|O_NOFOLLOW reads the NUL-terminated path and
    // returns a new descriptor or -1.
    let fd = unsafe {
        libc::openat(
            root.as_raw_fd(),
            cpath.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE.
pub fn bpf_load_cgroup_device(
    program: &[crate::cgroups::devices_bpf::Insn],
) -> io::Result<OwnedFd> {
    // The head of `union bpf_attr` for BPF_PROG_LOAD; the rest stays zero.
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        rest: [u8; 64],
    }
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 16 * 1024];
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(program.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        rest: [0; 64],
    };
    // SAFETY: bpf(BPF_PROG_LOAD) reads `size` bytes of `attr`, and through
    // it the instructions and the license, and writes at most `log_size`
    // bytes into `log`, all alive for the call; Insn has the kernel's struct
    // bpf_insn layout (repr(C), 8 bytes).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        // The verifier says why it refused the program.
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        let why = String::from_utf8_lossy(&log[..end]);
        let why = why.trim();
        if why.is_empty() {
            return Err(err);
        }
        return Err(io::Error::new(
            err.kind(),
            format!("{err}: {}", why.lines().last().unwrap_or(why)),
        ));
    }
    // SAFETY: a fresh descriptor from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches a CGROUP_DEVICE program to the cgroup directory `cgroup`,
/// beside any others (BPF_F_ALLOW_MULTI): all must allow an access.
pub fn bpf_attach_cgroup_device(program: BorrowedFd<'_>, cgroup: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct ProgAttach {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
        rest: [u8; 64],
    }
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    let attr = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
        rest: [0; 64],
    };
    // SAFETY: bpf(BPF_PROG_ATTACH) reads `size` bytes of `attr`, alive for
    // the call; both descriptors are valid borrowed descriptors.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttach,
            std::mem::size_of::<ProgAttach>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
