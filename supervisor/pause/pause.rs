//! berth-pause: the process a pod sandbox runs. It holds the pod's
//! namespaces and does nothing else: as the pod's PID 1 it reaps the
//! zombies orphans leave, and it exits 0 on SIGINT or SIGTERM.
//!
//! Freestanding (no std, no libc): the supervisor's build script compiles
//! it with rustc into a static binary of a few kilobytes and embeds it,
//! and the supervisor packs it into the pause image. All signals are
//! blocked and taken one at a time with `rt_sigtimedwait`, so it needs no
//! signal handlers: it sleeps in the kernel until a signal comes, as
//! `pause()` would. A SIGKILL from outside still ends it.

#![no_std]
#![no_main]

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const RT_SIGPROCMASK: usize = 14;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const WAIT4: usize = 61;
    pub const EXIT_GROUP: usize = 231;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const RT_SIGPROCMASK: usize = 135;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const WAIT4: usize = 260;
    pub const EXIT_GROUP: usize = 94;
}

const SIGINT: usize = 2;
const SIGTERM: usize = 15;
const SIGCHLD: usize = 17;
const SIG_BLOCK: usize = 0;
const WNOHANG: usize = 1;

#[cfg(target_arch = "x86_64")]
unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes a valid system call and arguments; the
    // kernel clobbers rcx and r11 only.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d,
            lateout("rcx") _, lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes a valid system call and arguments.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a as isize => ret,
            in("x1") b, in("x2") c, in("x3") d,
            options(nostack)
        );
    }
    ret
}

fn exit(code: usize) -> ! {
    loop {
        // SAFETY: exit_group takes a number and does not return.
        unsafe {
            syscall4(nr::EXIT_GROUP, code, 0, 0, 0);
        }
    }
}

/// Reaps every child that has exited.
fn reap() {
    loop {
        // SAFETY: wait4(-1, NULL, WNOHANG, NULL) writes nothing.
        let r = unsafe { syscall4(nr::WAIT4, usize::MAX, 0, WNOHANG, 0) };
        if r <= 0 {
            return;
        }
    }
}

#[no_mangle]
pub extern "C" fn _start() -> ! {
    // Every signal blocked (SIGKILL and SIGSTOP cannot be), then taken
    // from the queue one by one.
    let all: u64 = !0;
    // SAFETY: `all` is a valid 8-byte signal set that outlives the call.
    unsafe {
        syscall4(nr::RT_SIGPROCMASK, SIG_BLOCK, &all as *const u64 as usize, 0, 8);
    }
    let wanted: u64 = (1 << (SIGINT - 1)) | (1 << (SIGTERM - 1)) | (1 << (SIGCHLD - 1));
    loop {
        // SAFETY: `wanted` is a valid signal set; no info or timeout.
        let signal = unsafe {
            syscall4(nr::RT_SIGTIMEDWAIT, &wanted as *const u64 as usize, 0, 0, 8)
        };
        match signal as usize {
            SIGINT | SIGTERM => exit(0),
            SIGCHLD => reap(),
            _ => {}
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    exit(2)
}
