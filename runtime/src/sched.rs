//! A process's scheduling and execution attributes: the CPU scheduler
//! (`process.scheduler`), the I/O priority (`process.ioPriority`), the
//! execution domain (`linux.personality`), the NUMA memory policy
//! (`linux.memoryPolicy`) and the CPU affinity of `exec`'d processes
//! (`process.execCPUAffinity`), applied as runc 1.3 applies them.
//!
//! The init and every `exec`'d process set the first four on themselves
//! after the root filesystem and before the user switch (so that
//! CAP_SYS_NICE still counts), in runc's order: scheduler, I/O priority,
//! personality, memory policy. Affinity: a process that joins the
//! container's cgroup resets its affinity to every CPU, which the kernel
//! narrows to the cgroup's cpuset (since Linux 6.2 it no longer does so
//! itself for a process that inherited a narrower mask); an `exec`'d
//! process is instead born on `initial` and moved to `final` once in the
//! cgroup.

use std::io;

use nix::sched::CpuSet;
use nix::unistd::Pid;
use oci_spec::runtime::{
    ExecCPUAffinity, IOPriorityClass, Linux, LinuxIOPriority, LinuxMemoryPolicy,
    LinuxPersonalityDomain, LinuxSchedulerFlag, LinuxSchedulerPolicy, MemoryPolicyFlagType,
    MemoryPolicyModeType, Process, Scheduler, Spec,
};

use crate::sys::sched::{self as sys, SchedAttr};

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("{0}")]
    Invalid(String),
    #[error("error setting scheduler {policy}: {source}")]
    Scheduler { policy: String, source: io::Error },
    #[error("failed to set io priority {class} {level}: {source}")]
    IoPriority {
        class: String,
        level: u32,
        source: io::Error,
    },
    #[error("set_personality {domain}: {source}")]
    Personality { domain: String, source: io::Error },
    #[error("set_mempolicy {mode}: {source}")]
    MemoryPolicy { mode: String, source: io::Error },
    #[error("error setting {which} CPU affinity {cpus:?}: {source}")]
    Affinity {
        which: &'static str,
        cpus: String,
        source: nix::Error,
    },
}

/// Highest CPU or NUMA node number a list may name (the size of the
/// kernel's default cpumask and of `nix`'s CpuSet).
const MAX_ID: usize = 1023;

/// Parses a list such as `0-3,7` (spaces around items and empty items are
/// allowed, as runc allows them) into the ids it names, ascending.
pub fn parse_list(what: &str, list: &str) -> Result<Vec<usize>, SchedError> {
    let bad = |why: String| SchedError::Invalid(format!("invalid {what} {list:?}: {why}"));
    let number = |s: &str| -> Result<usize, SchedError> {
        let n: usize = s
            .trim()
            .parse()
            .map_err(|_| bad(format!("{s:?} is not a number")))?;
        if n > MAX_ID {
            return Err(bad(format!("values above {MAX_ID} are not supported")));
        }
        Ok(n)
    };
    let mut ids = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (start, end) = match item.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(item)?;
                (n, n)
            }
        };
        if start > end {
            return Err(bad(format!("range {item} runs backwards")));
        }
        ids.extend(start..=end);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn policy_number(policy: LinuxSchedulerPolicy) -> u32 {
    match policy {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    }
}

fn flag_bit(flag: LinuxSchedulerFlag) -> u64 {
    match flag {
        LinuxSchedulerFlag::SchedResetOnFork => 0x01,
        LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
        LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
        LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
        LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
        LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
        LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
    }
}

/// The runtime-spec's names of the scheduler flags that oci-spec 0.8.4
/// spells differently (its serde names derive from the variant names):
/// `(spec, oci-spec)`.
pub const SCHED_FLAG_SPELLINGS: [(&str, &str); 2] = [
    ("SCHED_FLAG_RESET_ON_FORK", "SCHED_RESET_ON_FORK"),
    ("SCHED_FLAG_DL_OVERRUN", "SCHED_FLAG_D_L_OVERRUN"),
];

/// `process.scheduler` as sched_setattr takes it, checked as runc checks it.
fn sched_attr(s: &Scheduler) -> Result<SchedAttr, SchedError> {
    let bad = |m: &str| Err(SchedError::Invalid(m.to_string()));
    let policy = *s.policy();
    let nice = s.nice().unwrap_or(0);
    let priority = s.priority().unwrap_or(0);
    if matches!(
        policy,
        LinuxSchedulerPolicy::SchedOther | LinuxSchedulerPolicy::SchedBatch
    ) && !(-20..=19).contains(&nice)
    {
        return Err(SchedError::Invalid(format!(
            "invalid scheduler.nice: {nice} when scheduler.policy is {policy}"
        )));
    }
    let realtime = matches!(
        policy,
        LinuxSchedulerPolicy::SchedFifo | LinuxSchedulerPolicy::SchedRr
    );
    if priority != 0 && !realtime {
        return bad("scheduler.priority can only be specified for SchedFIFO or SchedRR policy");
    }
    if priority < 0 {
        return bad("scheduler.priority must not be negative");
    }
    let (runtime, deadline, period) = (
        s.runtime().unwrap_or(0),
        s.deadline().unwrap_or(0),
        s.period().unwrap_or(0),
    );
    if policy != LinuxSchedulerPolicy::SchedDeadline && (runtime, deadline, period) != (0, 0, 0) {
        return bad(
            "scheduler runtime/deadline/period can only be specified for SchedDeadline policy",
        );
    }
    Ok(SchedAttr {
        policy: policy_number(policy),
        flags: s
            .flags()
            .iter()
            .flatten()
            .fold(0, |all, f| all | flag_bit(*f)),
        nice,
        priority: priority as u32,
        runtime,
        deadline,
        period,
    })
}

fn io_priority(p: &LinuxIOPriority) -> Result<(u32, u32), SchedError> {
    let level = p.priority();
    if !(0..=7).contains(&level) {
        return Err(SchedError::Invalid(format!(
            "invalid ioPriority.Priority: {level}"
        )));
    }
    let class = match p.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    Ok((class, level as u32))
}

fn memory_policy(p: &LinuxMemoryPolicy) -> Result<(i32, Vec<usize>), SchedError> {
    let nodes = parse_list("memoryPolicy.nodes", p.nodes().as_deref().unwrap_or(""))?;
    let (mode, needs) = match p.mode() {
        MemoryPolicyModeType::MpolDefault => (0, Some(false)),
        MemoryPolicyModeType::MpolPreferred => (1, None),
        MemoryPolicyModeType::MpolBind => (2, Some(true)),
        MemoryPolicyModeType::MpolInterleave => (3, Some(true)),
        MemoryPolicyModeType::MpolLocal => (4, Some(false)),
        MemoryPolicyModeType::MpolPreferredMany => (5, Some(true)),
        MemoryPolicyModeType::MpolWeightedInterleave => (6, Some(true)),
    };
    match needs {
        Some(false) if !nodes.is_empty() => {
            return Err(SchedError::Invalid(format!(
                "memory policy mode {} requires 0 nodes but got {}",
                p.mode(),
                nodes.len()
            )))
        }
        Some(true) if nodes.is_empty() => {
            return Err(SchedError::Invalid(format!(
                "memory policy mode {} requires at least one node but got 0",
                p.mode()
            )))
        }
        _ => {}
    }
    let flags: i32 = p
        .flags()
        .iter()
        .flatten()
        .map(|f| match f {
            MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
            MemoryPolicyFlagType::MpolFRelativeNodes => 1 << 14,
            MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
        })
        .fold(0, |a, b| a | b);
    Ok((mode | flags, nodes))
}

/// The attributes a process sets on itself before exec.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attributes {
    scheduler: Option<(SchedAttr, String)>,
    io_priority: Option<(u32, u32, String)>,
    personality: Option<(u32, String)>,
    memory_policy: Option<(i32, Vec<usize>, String)>,
}

impl Attributes {
    /// The container's init: its process and linux sections.
    pub fn for_init(spec: &Spec) -> Result<Attributes, SchedError> {
        let process = spec.process().as_ref();
        Attributes::new(
            process.and_then(|p| p.scheduler().as_ref()),
            process.and_then(|p| p.io_priority().as_ref()),
            spec.linux().as_ref(),
        )
    }

    /// An `exec`'d process: its own scheduler and I/O priority, else the
    /// container's (as runc), and the container's personality and memory
    /// policy.
    pub fn for_exec(process: &Process, container: &Spec) -> Result<Attributes, SchedError> {
        let base = container.process().as_ref();
        Attributes::new(
            process
                .scheduler()
                .as_ref()
                .or(base.and_then(|p| p.scheduler().as_ref())),
            process
                .io_priority()
                .as_ref()
                .or(base.and_then(|p| p.io_priority().as_ref())),
            container.linux().as_ref(),
        )
    }

    fn new(
        scheduler: Option<&Scheduler>,
        io: Option<&LinuxIOPriority>,
        linux: Option<&Linux>,
    ) -> Result<Attributes, SchedError> {
        let scheduler = scheduler
            .map(|s| Ok::<_, SchedError>((sched_attr(s)?, s.policy().to_string())))
            .transpose()?;
        let io_priority = io
            .map(|p| {
                let (class, level) = io_priority(p)?;
                Ok::<_, SchedError>((class, level, p.class().to_string()))
            })
            .transpose()?;
        let personality = linux.and_then(|l| l.personality().as_ref()).map(|p| {
            if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
                tracing::warn!(flags = ?p.flags(), "ignoring personality flags: none are supported");
            }
            let persona = match p.domain() {
                LinuxPersonalityDomain::PerLinux => 0x0000,
                LinuxPersonalityDomain::PerLinux32 => 0x0008,
            };
            (persona, p.domain().to_string())
        });
        let memory_policy = linux
            .and_then(|l| l.memory_policy().as_ref())
            .map(|p| {
                let (mode, nodes) = memory_policy(p)?;
                Ok::<_, SchedError>((mode, nodes, p.mode().to_string()))
            })
            .transpose()?;
        Ok(Attributes {
            scheduler,
            io_priority,
            personality,
            memory_policy,
        })
    }

    /// Sets them on the calling process, in runc's order.
    pub fn apply(&self) -> Result<(), SchedError> {
        if let Some((attr, policy)) = &self.scheduler {
            sys::set_sched_attr(*attr).map_err(|source| SchedError::Scheduler {
                policy: policy.clone(),
                source,
            })?;
        }
        if let Some((class, level, name)) = &self.io_priority {
            sys::set_io_priority(*class, *level).map_err(|source| SchedError::IoPriority {
                class: name.clone(),
                level: *level,
                source,
            })?;
        }
        if let Some((persona, domain)) = &self.personality {
            sys::set_personality(*persona).map_err(|source| SchedError::Personality {
                domain: domain.clone(),
                source,
            })?;
        }
        if let Some((mode, nodes, name)) = &self.memory_policy {
            sys::set_mempolicy(*mode, nodes).map_err(|source| SchedError::MemoryPolicy {
                mode: name.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Every CPU `nix` can name; the kernel keeps those that exist and that the
/// process's cpuset allows.
fn all_cpus() -> CpuSet {
    let mut set = CpuSet::new();
    for cpu in 0..CpuSet::count() {
        let _ = set.set(cpu);
    }
    set
}

fn cpu_set(cpus: &[usize]) -> CpuSet {
    let mut set = CpuSet::new();
    for cpu in cpus {
        // parse_list keeps every id below CpuSet::count().
        let _ = set.set(*cpu);
    }
    set
}

/// Resets the calling process's affinity to every CPU its cgroup allows,
/// after it joined the cgroup, so that it does not keep a narrower mask
/// inherited from whoever started the runtime. Best effort, as runc's.
pub fn reset_affinity() {
    if let Err(e) = nix::sched::sched_setaffinity(Pid::from_raw(0), &all_cpus()) {
        tracing::warn!(error = %e, "resetting the CPU affinity failed: the container process may inherit the runtime's");
    }
}

/// `process.execCPUAffinity` of an `exec`'d process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExecAffinity {
    initial: Option<(Vec<usize>, String)>,
    last: Option<(Vec<usize>, String)>,
}

/// The affinity the runtime had before it took `initial`, to go back to
/// once the process is cloned.
pub struct SavedAffinity(Option<CpuSet>);

impl ExecAffinity {
    /// From the process (a process.json's own), else the container's.
    pub fn for_exec(process: &Process, container: &Spec) -> Result<ExecAffinity, SchedError> {
        let chosen = process.exec_cpu_affinity().as_ref().or(container
            .process()
            .as_ref()
            .and_then(|p| p.exec_cpu_affinity().as_ref()));
        ExecAffinity::from_spec(chosen)
    }

    fn from_spec(aff: Option<&ExecCPUAffinity>) -> Result<ExecAffinity, SchedError> {
        let parse = |what: &str, list: &Option<String>| {
            list.as_deref()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let cpus = parse_list(what, l)?;
                    if cpus.is_empty() {
                        return Err(SchedError::Invalid(format!(
                            "invalid {what} {l:?}: no CPUs listed"
                        )));
                    }
                    Ok((cpus, l.to_string()))
                })
                .transpose()
        };
        let Some(aff) = aff else {
            return Ok(ExecAffinity::default());
        };
        Ok(ExecAffinity {
            initial: parse("execCPUAffinity.initial", aff.initial())?,
            last: parse("execCPUAffinity.final", aff.cpu_affinity_final())?,
        })
    }

    /// Before clone, in the runtime: takes `initial`, which the new process
    /// inherits, and returns what to restore afterwards (in the runtime only).
    pub fn enter_initial(&self) -> Result<SavedAffinity, SchedError> {
        let Some((cpus, list)) = &self.initial else {
            return Ok(SavedAffinity(None));
        };
        let me = Pid::from_raw(0);
        let saved = nix::sched::sched_getaffinity(me).ok();
        nix::sched::sched_setaffinity(me, &cpu_set(cpus)).map_err(|source| {
            SchedError::Affinity {
                which: "initial",
                cpus: list.clone(),
                source,
            }
        })?;
        Ok(SavedAffinity(saved))
    }

    /// In the new process once it is in the container's cgroup: `final`
    /// if given; with neither, the reset every process gets; with only
    /// `initial`, whatever the kernel left.
    pub fn apply_final(&self) -> Result<(), SchedError> {
        match (&self.initial, &self.last) {
            (_, Some((cpus, list))) => {
                nix::sched::sched_setaffinity(Pid::from_raw(0), &cpu_set(cpus)).map_err(|source| {
                    SchedError::Affinity {
                        which: "final",
                        cpus: list.clone(),
                        source,
                    }
                })
            }
            (None, None) => {
                reset_affinity();
                Ok(())
            }
            (Some(_), None) => Ok(()),
        }
    }
}

impl SavedAffinity {
    /// Gives the runtime back the affinity it had (best effort).
    pub fn restore(self) {
        if let Some(set) = self.0 {
            let _ = nix::sched::sched_setaffinity(Pid::from_raw(0), &set);
        }
    }
}

/// Checks the attributes of a config, for `spec::validate_spec`.
pub fn validate(spec: &Spec) -> Result<(), SchedError> {
    Attributes::for_init(spec)?;
    if let Some(p) = spec.process() {
        ExecAffinity::from_spec(p.exec_cpu_affinity().as_ref())?;
    }
    Ok(())
}

/// Rewrites the runtime-spec's spellings of scheduler flags at `pointer`
/// (an array of strings) into oci-spec's, so that the config parses.
pub fn respell_sched_flags(value: &mut serde_json::Value, pointer: &str) {
    let Some(flags) = value.pointer_mut(pointer).and_then(|f| f.as_array_mut()) else {
        return;
    };
    for flag in flags {
        if let Some((_, ours)) = SCHED_FLAG_SPELLINGS
            .iter()
            .find(|(spec, _)| flag.as_str() == Some(spec))
        {
            *flag = serde_json::Value::String((*ours).to_string());
        }
    }
}

/// Parses config JSON into `T`; if that fails and the text holds a
/// scheduler flag spelled as the runtime-spec spells it, parses again with
/// the flags at `pointer` respelled. The common case costs nothing extra.
pub fn parse_with_sched_flags<T: serde::de::DeserializeOwned>(
    data: &[u8],
    pointer: &str,
) -> serde_json::Result<T> {
    match serde_json::from_slice(data) {
        Ok(v) => Ok(v),
        Err(first) => {
            let spelled = SCHED_FLAG_SPELLINGS
                .iter()
                .any(|(spec, _)| data.windows(spec.len()).any(|w| w == spec.as_bytes()));
            if !spelled {
                return Err(first);
            }
            let mut value: serde_json::Value = serde_json::from_slice(data)?;
            respell_sched_flags(&mut value, pointer);
            serde_json::from_value(value)
        }
    }
}

#[cfg(test)]
mod tests;
