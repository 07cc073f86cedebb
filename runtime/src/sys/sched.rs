//! Raw system calls for a process's scheduling and execution attributes
//! (`process.scheduler`, `process.ioPriority`, `linux.personality`,
//! `linux.memoryPolicy`), which neither `nix` nor `std` wraps. CPU affinity
//! goes through `nix::sched`. The meaning of the values is `crate::sched`'s.

use std::io;

/// `IOPRIO_WHO_PROCESS`: ioprio_set/get address one process (0: the caller).
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
/// The class sits above 13 bits of per-class data in an I/O priority.
const IOPRIO_CLASS_SHIFT: u32 = 13;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Sets the calling process's I/O scheduling class and level (ioprio_set).
pub fn set_io_priority(class: u32, level: u32) -> io::Result<()> {
    let value = (class << IOPRIO_CLASS_SHIFT) | level;
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            value as libc::c_int,
        )
    };
    check(ret).map(drop)
}

#[cfg(test)]
/// The I/O scheduling class and level of process `pid` (0: the caller).
pub fn io_priority(pid: i32) -> io::Result<(u32, u32)> {
    // SAFETY: ioprio_get takes two integers and touches no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, pid) };
    let value = check(ret)? as u32;
    Ok((
        value >> IOPRIO_CLASS_SHIFT,
        value & ((1 << IOPRIO_CLASS_SHIFT) - 1),
    ))
}

/// The scheduling attributes sched_setattr(2) sets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedAttr {
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
}

/// `struct sched_attr` as the kernel lays it out (SCHED_ATTR_SIZE_VER1, 56
/// bytes, utilization clamps included, as runc passes it; the clamps stay
/// 0).
#[repr(C)]
#[derive(Default)]
struct KernelSchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

impl SchedAttr {
    fn to_kernel(self) -> KernelSchedAttr {
        KernelSchedAttr {
            size: std::mem::size_of::<KernelSchedAttr>() as u32,
            policy: self.policy,
            flags: self.flags,
            nice: self.nice,
            priority: self.priority,
            runtime: self.runtime,
            deadline: self.deadline,
            period: self.period,
            ..KernelSchedAttr::default()
        }
    }
}

/// Sets the calling thread's scheduling policy and attributes.
pub fn set_sched_attr(attr: SchedAttr) -> io::Result<()> {
    let kernel = attr.to_kernel();
    // SAFETY: sched_setattr reads `kernel.size` bytes from the struct, which
    // lives on our stack for the call; pid 0 is the caller, flags must be 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &kernel as *const KernelSchedAttr,
            0,
        )
    };
    check(ret).map(drop)
}

#[cfg(test)]
/// The scheduling attributes of thread `pid` (0: the caller).
pub fn sched_attr(pid: i32) -> io::Result<SchedAttr> {
    let mut kernel = SchedAttr::default().to_kernel();
    let size = kernel.size;
    // SAFETY: sched_getattr writes at most `size` bytes into the struct on
    // our stack, which is exactly that large.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            pid,
            &mut kernel as *mut KernelSchedAttr,
            size,
            0,
        )
    };
    check(ret)?;
    Ok(SchedAttr {
        policy: kernel.policy,
        flags: kernel.flags,
        nice: kernel.nice,
        priority: kernel.priority,
        runtime: kernel.runtime,
        deadline: kernel.deadline,
        period: kernel.period,
    })
}

/// Sets the calling process's execution domain (personality(2)); returns
/// the previous one.
pub fn set_personality(persona: u32) -> io::Result<u32> {
    // SAFETY: personality takes an integer and touches no memory of ours.
    let ret = unsafe { libc::personality(libc::c_ulong::from(persona)) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as u32)
}

const BITS: usize = libc::c_ulong::BITS as usize;

/// Sets the calling thread's NUMA memory policy: `mode` with its flags
/// or'ed in, over the nodes listed (none for modes that take none).
pub fn set_mempolicy(mode: i32, nodes: &[usize]) -> io::Result<()> {
    let words = nodes.iter().max().map_or(0, |max| max / BITS + 1);
    let mut mask: Vec<libc::c_ulong> = vec![0; words];
    for node in nodes {
        mask[node / BITS] |= 1 << (node % BITS);
    }
    // The kernel reads `maxnode - 1` bits.
    let (ptr, maxnode) = if mask.is_empty() {
        (std::ptr::null(), 0)
    } else {
        (mask.as_ptr(), mask.len() * BITS + 1)
    };
    // SAFETY: set_mempolicy reads (maxnode - 1) bits from `ptr`, which points
    // to `mask.len()` words alive for the call, or nothing when null.
    let ret = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, maxnode) };
    check(ret).map(drop)
}

#[cfg(test)]
/// The calling thread's memory policy mode and its nodes (up to 1024).
pub fn mempolicy() -> io::Result<(i32, Vec<usize>)> {
    const MAX_NODES: usize = 1024;
    let mut mode: libc::c_int = 0;
    let mut mask: Vec<libc::c_ulong> = vec![0; MAX_NODES / BITS];
    // SAFETY: get_mempolicy writes one int to `mode` and MAX_NODES bits into
    // `mask`, both ours and that large; addr is unused without flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode as *mut libc::c_int,
            mask.as_mut_ptr(),
            MAX_NODES,
            std::ptr::null_mut::<libc::c_void>(),
            0,
        )
    };
    check(ret)?;
    let nodes = (0..MAX_NODES)
        .filter(|n| mask[n / BITS] & (1 << (n % BITS)) != 0)
        .collect();
    Ok((mode, nodes))
}
