//! The processes of a task: start, exec, signal, wait, resize, pause,
//! update, and the queries (state, list, pids, stats), each a call to the
//! task's shim.

use std::sync::Arc;
use std::time::SystemTime;

use berth_client::trace::{self, Layer};
use berth_shim::protocol::{ExitInfo, Pids, ProcessState, Request, Started};
use serde_json::Value;

use super::markers::report_marker;
use super::shim::{AttachInput, AttachOutput};
use super::{
    check_exec_id, timed_out, Exit, ProcessInfo, Slot, Stats, Task, TaskError, TaskStatus, Tasks,
    SHIM_CALL_TIMEOUT,
};

impl Tasks {
    /// Starts the init, or a registered exec'd process; its pid.
    pub async fn start(&self, ns: &str, id: &str, exec_id: Option<&str>) -> Result<u32, TaskError> {
        let task = self.task(ns, id)?;
        // Held until the start is queued: an exit that comes meanwhile is
        // queued after it.
        let _gate = task.starting.lock().await;
        let started: Started = match exec_id {
            None => {
                let traced = trace::active();
                let _span = trace::span(Layer::Supervisor, "shim start");
                let mut started: Started = task.call_as(&Request::Start { trace: traced }).await?;
                trace::extend(super::lifecycle::shim_spans(std::mem::take(
                    &mut started.trace,
                )));
                started
            }
            Some(e) => {
                task.check_alive("cannot start a process in it")?;
                task.call_as(&Request::StartExec {
                    exec_id: e.to_string(),
                })
                .await?
            }
        };
        let pid = started.pid.max(0) as u32;
        let topic = if exec_id.is_some() {
            "/tasks/exec-started"
        } else {
            "/tasks/start"
        };
        self.publish(ns, topic, Self::attributes(&task, exec_id, pid));
        Ok(pid)
    }

    /// Registers a process (an OCI `process` object, JSON) to run in the
    /// task at `start`.
    pub async fn exec(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
        process: &[u8],
        terminal: bool,
        stdin: bool,
    ) -> Result<(), TaskError> {
        check_exec_id(exec_id)?;
        let process: Value = serde_json::from_slice(process).map_err(|e| TaskError::Invalid {
            what: "process",
            reason: e.to_string(),
        })?;
        if !process.is_object() {
            return Err(TaskError::Invalid {
                what: "process",
                reason: "not a JSON object".into(),
            });
        }
        let task = self.task(ns, id)?;
        task.check_alive("cannot exec in it")?;
        task.call(&Request::Exec {
            exec_id: exec_id.to_string(),
            process,
            terminal,
        })
        .await?;
        if !stdin && !terminal {
            task.call(&Request::CloseStdin {
                exec_id: Some(exec_id.to_string()),
            })
            .await?;
        }
        let mut attributes = Self::attributes(&task, Some(exec_id), 0);
        attributes.remove("pid");
        self.publish(ns, "/tasks/exec-added", attributes);
        Ok(())
    }

    /// Forgets an exited exec'd process; its exit.
    pub async fn delete_process(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
    ) -> Result<(u32, Exit), TaskError> {
        check_exec_id(exec_id)?;
        let task = self.task(ns, id)?;
        let state: ProcessState = task
            .call_as(&Request::State {
                exec_id: Some(exec_id.to_string()),
            })
            .await?;
        let info: ExitInfo = task
            .call_as(&Request::Delete {
                exec_id: Some(exec_id.to_string()),
            })
            .await?;
        // Its marker may still be on its way: removed once written.
        task.markers.idle().await;
        let _ = std::fs::remove_file(report_marker(&task.dir, Some(exec_id)));
        Ok((state.pid.unwrap_or(0).max(0) as u32, Exit::from_info(&info)))
    }

    pub async fn get(
        &self,
        ns: &str,
        id: &str,
        exec_id: Option<&str>,
    ) -> Result<ProcessInfo, TaskError> {
        if let Some(e) = exec_id {
            check_exec_id(e)?;
        }
        let task = self.task(ns, id)?;
        self.process_info(&task, exec_id).await
    }

    pub(super) async fn process_info(
        &self,
        task: &Task,
        exec_id: Option<&str>,
    ) -> Result<ProcessInfo, TaskError> {
        let request = Request::State {
            exec_id: exec_id.map(str::to_owned),
        };
        let state =
            match tokio::time::timeout(SHIM_CALL_TIMEOUT, task.call_as::<ProcessState>(&request))
                .await
            {
                Ok(state) => state,
                Err(_) => Err(timed_out(&task.id, &task.socket)),
            };
        match state {
            Ok(s) => Ok(ProcessInfo {
                container_id: task.id.clone(),
                exec_id: exec_id.map(str::to_owned),
                pid: s.pid.unwrap_or(0).max(0) as u32,
                status: TaskStatus::from_shim(s.status),
                terminal: s.terminal,
                exit: s.exit_status.map(|status| Exit {
                    status,
                    at: s
                        .exited_at
                        .as_deref()
                        .and_then(berth_shim::time::parse_rfc3339)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                }),
            }),
            // The shim cannot be reached: what the supervisor knows.
            Err(TaskError::Shim { .. }) if exec_id.is_none() => {
                let exit = task.exited();
                Ok(ProcessInfo {
                    container_id: task.id.clone(),
                    exec_id: None,
                    pid: task.pid,
                    status: if exit.is_some() {
                        TaskStatus::Stopped
                    } else {
                        TaskStatus::Unknown
                    },
                    terminal: task.terminal,
                    exit,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The inits of the namespace's tasks.
    pub async fn list(&self, ns: &str) -> Vec<ProcessInfo> {
        self.list_where(|n| n == ns).await
    }

    /// The inits of every namespace's tasks (for the metrics).
    pub async fn list_all(&self) -> Vec<ProcessInfo> {
        self.list_where(|_| true).await
    }

    async fn list_where(&self, ns: impl Fn(&str) -> bool) -> Vec<ProcessInfo> {
        let tasks: Vec<Arc<Task>> = self
            .lock()
            .iter()
            .filter(|((n, _), _)| ns(n))
            .filter_map(|(_, slot)| match slot {
                Slot::Ready(t) => Some(Arc::clone(t)),
                Slot::Creating | Slot::Held => None,
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Ok(info) = self.process_info(&task, None).await {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        out
    }

    pub async fn kill(
        &self,
        ns: &str,
        id: &str,
        exec_id: Option<&str>,
        signal: u32,
        all: bool,
    ) -> Result<(), TaskError> {
        let signal = i32::try_from(signal)
            .ok()
            .filter(|s| (1..=64).contains(s))
            .ok_or_else(|| TaskError::Invalid {
                what: "signal",
                reason: format!("{signal} is not a signal number (1-64)"),
            })?;
        let task = self.task(ns, id)?;
        task.call(&Request::Kill {
            signal,
            all,
            exec_id: exec_id.map(str::to_owned),
        })
        .await
        .map(drop)
    }

    /// Returns once the process has exited.
    pub async fn wait(&self, ns: &str, id: &str, exec_id: Option<&str>) -> Result<Exit, TaskError> {
        let task = self.task(ns, id)?;
        match exec_id {
            None => {
                let mut rx = task.exit.subscribe();
                let exit = rx
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| TaskError::NotFound(id.to_string()))?;
                Ok(exit.clone().unwrap_or_else(Exit::unknown))
            }
            Some(e) => {
                let info: ExitInfo = task
                    .call_as(&Request::Wait {
                        exec_id: Some(e.to_string()),
                    })
                    .await?;
                Ok(Exit::from_info(&info))
            }
        }
    }

    pub async fn resize(
        &self,
        ns: &str,
        id: &str,
        exec_id: Option<&str>,
        width: u32,
        height: u32,
    ) -> Result<(), TaskError> {
        let size = |v: u32, what| {
            u16::try_from(v).map_err(|_| TaskError::Invalid {
                what,
                reason: format!("{v} is more than {}", u16::MAX),
            })
        };
        let (width, height) = (size(width, "width")?, size(height, "height")?);
        self.task(ns, id)?
            .call(&Request::Resize {
                exec_id: exec_id.map(str::to_owned),
                width,
                height,
            })
            .await
            .map(drop)
    }

    pub async fn close_stdin(
        &self,
        ns: &str,
        id: &str,
        exec_id: Option<&str>,
    ) -> Result<(), TaskError> {
        self.task(ns, id)?
            .call(&Request::CloseStdin {
                exec_id: exec_id.map(str::to_owned),
            })
            .await
            .map(drop)
    }

    pub async fn pause(&self, ns: &str, id: &str) -> Result<(), TaskError> {
        let task = self.task(ns, id)?;
        task.check_alive("cannot pause it")?;
        task.call(&Request::Pause).await?;
        self.publish(ns, "/tasks/paused", Self::attributes(&task, None, task.pid));
        Ok(())
    }

    pub async fn resume(&self, ns: &str, id: &str) -> Result<(), TaskError> {
        let task = self.task(ns, id)?;
        task.check_alive("cannot resume it")?;
        task.call(&Request::Resume).await?;
        self.publish(
            ns,
            "/tasks/resumed",
            Self::attributes(&task, None, task.pid),
        );
        Ok(())
    }

    pub async fn pids(&self, ns: &str, id: &str) -> Result<Vec<u32>, TaskError> {
        let task = self.task(ns, id)?;
        let pids: Pids = task.call_as(&Request::Pids).await?;
        Ok(pids.pids.into_iter().map(|p| p.max(0) as u32).collect())
    }

    /// Changes the task's limits (an OCI `linux.resources` object, JSON).
    pub async fn update(&self, ns: &str, id: &str, resources: &[u8]) -> Result<(), TaskError> {
        let value: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(resources).map_err(|e| TaskError::Invalid {
                what: "resources",
                reason: e.to_string(),
            })?;
        let resources = serde_json::to_value(&value).map_err(|e| TaskError::Invalid {
            what: "resources",
            reason: e.to_string(),
        })?;
        let task = self.task(ns, id)?;
        task.check_alive("cannot update it")?;
        task.call(&Request::Update { resources }).await.map(drop)
    }

    /// Reopens the container log at its path (kubelet moved it away to
    /// rotate it); refused when the task has exited.
    pub async fn reopen_log(&self, ns: &str, id: &str) -> Result<(), TaskError> {
        let task = self.task(ns, id)?;
        task.check_alive("cannot reopen its log")?;
        task.call(&Request::ReopenLog).await?;
        Ok(())
    }

    pub async fn stats(&self, ns: &str, id: &str) -> Result<Stats, TaskError> {
        let task = self.task(ns, id)?;
        task.check_alive("it has no cgroup any more")?;
        let mut stats = Stats::from_runtime(task.call(&Request::Stats).await?);
        stats.cgroup_version = super::host_cgroup_version();
        Ok(stats)
    }

    /// Attaches to a process: its output, and (with `stdin`) its input.
    pub async fn attach(
        &self,
        ns: &str,
        id: &str,
        exec_id: Option<&str>,
        stdin: bool,
    ) -> Result<(AttachOutput, AttachInput), TaskError> {
        if let Some(e) = exec_id {
            check_exec_id(e)?;
        }
        let task = self.task(ns, id)?;
        let conn = task.conn().await?;
        conn.attach(exec_id, stdin)
            .await
            .map_err(|e| TaskError::shim(id, e))
    }
}
