//! The Tasks service: decodes, calls `crate::tasks`, encodes.

use std::sync::Arc;

use berth_client::trace::{self, Layer};
use berth_proto::tasks::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{namespace, task_status, timestamp_at, BoxStream, Service};
use crate::tasks::{CreateOptions, Exit, ProcessInfo, TaskError, TaskStatus};

fn status_pb(s: TaskStatus) -> pb::Status {
    match s {
        TaskStatus::Unknown => pb::Status::Unknown,
        TaskStatus::Created => pb::Status::Created,
        TaskStatus::Running => pb::Status::Running,
        TaskStatus::Paused => pb::Status::Paused,
        TaskStatus::Stopped => pb::Status::Stopped,
    }
}

fn process_pb(p: ProcessInfo) -> pb::Process {
    pb::Process {
        container_id: p.container_id,
        exec_id: p.exec_id.unwrap_or_default(),
        pid: p.pid,
        status: status_pb(p.status) as i32,
        terminal: p.terminal,
        exit_status: p.exit.as_ref().map_or(0, |e| e.status as u32),
        exited_at: p.exit.and_then(|e| timestamp_at(e.at)),
    }
}

fn delete_pb(id: String, pid: u32, exit: Exit) -> pb::DeleteResponse {
    pb::DeleteResponse {
        id,
        pid,
        exit_status: exit.status as u32,
        exited_at: timestamp_at(exit.at),
    }
}

/// Empty means the init.
fn exec(exec_id: &str) -> Option<&str> {
    (!exec_id.is_empty()).then_some(exec_id)
}

/// Empty means the init (owned, for work that outlives the request).
fn exec_owned(exec_id: String) -> Option<String> {
    (!exec_id.is_empty()).then_some(exec_id)
}

/// Runs a change to its end even when the client goes away: a create or a
/// delete cut off halfway would leave a shim, a mount or a table entry
/// behind.
async fn uncancelled<T: Send + 'static>(
    work: impl std::future::Future<Output = std::result::Result<T, TaskError>> + Send + 'static,
) -> std::result::Result<T, Status> {
    tokio::spawn(work)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(task_status)
}

type Result<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::tasks_server::Tasks for Service {
    async fn create(&self, req: Request<pb::CreateTaskRequest>) -> Result<pb::CreateTaskResponse> {
        let ns = namespace(&req)?;
        let trace = trace::from_metadata(req.metadata());
        let r = req.into_inner();
        let opts = CreateOptions {
            stdin: r.stdin,
            log_max_size: r.log_max_size,
            log_path: (!r.log_path.is_empty()).then(|| r.log_path.clone().into()),
            log_max_files: r.log_max_files,
            no_log: r.no_log,
            ..CreateOptions::default()
        };
        let (tasks, id) = (Arc::clone(&self.tasks), r.container_id.clone());
        let work = trace::scope(trace.clone(), async move {
            let _span = trace::span(Layer::Supervisor, "Tasks/Create");
            tasks.create(&ns, &id, opts).await
        });
        let pid = uncancelled(work).await?;
        let mut resp = Response::new(pb::CreateTaskResponse {
            container_id: r.container_id,
            pid,
        });
        if let Some(trace) = &trace {
            trace::answer(&mut resp, trace);
        }
        Ok(resp)
    }

    async fn start(&self, req: Request<pb::StartRequest>) -> Result<pb::StartResponse> {
        let ns = namespace(&req)?;
        let trace = trace::from_metadata(req.metadata());
        let r = req.into_inner();
        let tasks = Arc::clone(&self.tasks);
        let exec_id = exec_owned(r.exec_id);
        let work = trace::scope(trace.clone(), async move {
            let _span = trace::span(Layer::Supervisor, "Tasks/Start");
            tasks.start(&ns, &r.container_id, exec_id.as_deref()).await
        });
        let pid = uncancelled(work).await?;
        let mut resp = Response::new(pb::StartResponse { pid });
        if let Some(trace) = &trace {
            trace::answer(&mut resp, trace);
        }
        Ok(resp)
    }

    async fn delete(&self, req: Request<pb::DeleteTaskRequest>) -> Result<pb::DeleteResponse> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let (tasks, id2) = (Arc::clone(&self.tasks), id.clone());
        let (pid, exit) = uncancelled(async move { tasks.delete(&ns, &id2).await }).await?;
        Ok(Response::new(delete_pb(id, pid, exit)))
    }

    async fn delete_process(
        &self,
        req: Request<pb::DeleteProcessRequest>,
    ) -> Result<pb::DeleteResponse> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let tasks = Arc::clone(&self.tasks);
        let (id, exec_id) = (r.container_id, r.exec_id.clone());
        let (pid, exit) =
            uncancelled(async move { tasks.delete_process(&ns, &id, &exec_id).await }).await?;
        Ok(Response::new(delete_pb(r.exec_id, pid, exit)))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<pb::GetResponse> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let info = self
            .tasks
            .get(&ns, &r.container_id, exec(&r.exec_id))
            .await
            .map_err(task_status)?;
        Ok(Response::new(pb::GetResponse {
            process: Some(process_pb(info)),
        }))
    }

    async fn list(&self, req: Request<pb::ListTasksRequest>) -> Result<pb::ListTasksResponse> {
        let ns = namespace(&req)?;
        let tasks = self.tasks.list(&ns).await;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.into_iter().map(process_pb).collect(),
        }))
    }

    async fn kill(&self, req: Request<pb::KillRequest>) -> Result<()> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.tasks
            .kill(&ns, &r.container_id, exec(&r.exec_id), r.signal, r.all)
            .await
            .map_err(task_status)?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<pb::ExecProcessRequest>) -> Result<()> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.tasks
            .exec(
                &ns,
                &r.container_id,
                &r.exec_id,
                &r.spec,
                r.terminal,
                r.stdin,
            )
            .await
            .map_err(task_status)?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<pb::ResizePtyRequest>) -> Result<()> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.tasks
            .resize(&ns, &r.container_id, exec(&r.exec_id), r.width, r.height)
            .await
            .map_err(task_status)?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<pb::CloseIoRequest>) -> Result<()> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.stdin {
            self.tasks
                .close_stdin(&ns, &r.container_id, exec(&r.exec_id))
                .await
                .map_err(task_status)?;
        }
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<pb::PauseRequest>) -> Result<()> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        self.tasks.pause(&ns, &id).await.map_err(task_status)?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<pb::ResumeRequest>) -> Result<()> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        self.tasks.resume(&ns, &id).await.map_err(task_status)?;
        Ok(Response::new(()))
    }

    async fn list_pids(&self, req: Request<pb::ListPidsRequest>) -> Result<pb::ListPidsResponse> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let pids = self.tasks.pids(&ns, &id).await.map_err(task_status)?;
        Ok(Response::new(pb::ListPidsResponse { pids }))
    }

    async fn update(&self, req: Request<pb::UpdateTaskRequest>) -> Result<()> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.tasks
            .update(&ns, &r.container_id, &r.resources)
            .await
            .map_err(task_status)?;
        Ok(Response::new(()))
    }

    async fn stats(&self, req: Request<pb::StatsRequest>) -> Result<pb::StatsResponse> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let s = self.tasks.stats(&ns, &id).await.map_err(task_status)?;
        Ok(Response::new(pb::StatsResponse {
            cpu_usage_ns: s.cpu_usage_ns,
            cpu_user_ns: s.cpu_user_ns,
            cpu_system_ns: s.cpu_system_ns,
            memory_usage: s.memory_usage,
            memory_max_usage: s.memory_max_usage,
            memory_limit: s.memory_limit,
            pids_current: s.pids_current,
            pids_limit: s.pids_limit,
            io_read_bytes: s.io_read_bytes,
            io_write_bytes: s.io_write_bytes,
            raw: serde_json::to_vec(&s.raw).unwrap_or_default(),
            cgroup_version: s.cgroup_version,
            memory_stats: s.memory_stats.into_iter().collect(),
            memory_failcnt: s.memory_failcnt,
            cpu_percpu_ns: s.cpu_percpu_ns,
            cpu_throttling_periods: s.cpu_throttling_periods,
            cpu_throttled_periods: s.cpu_throttled_periods,
            cpu_throttled_time_ns: s.cpu_throttled_time_ns,
        }))
    }

    async fn wait(&self, req: Request<pb::WaitRequest>) -> Result<pb::WaitResponse> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let exit = self
            .tasks
            .wait(&ns, &r.container_id, exec(&r.exec_id))
            .await
            .map_err(task_status)?;
        Ok(Response::new(pb::WaitResponse {
            exit_status: exit.status as u32,
            exited_at: timestamp_at(exit.at),
        }))
    }

    type AttachStream = BoxStream<pb::AttachResponse>;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AttachRequest>>,
    ) -> Result<Self::AttachStream> {
        let ns = namespace(&req)?;
        let mut incoming = req.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("attach: the first message names the task"))?;
        let (mut output, mut input) = self
            .tasks
            .attach(&ns, &first.container_id, exec(&first.exec_id), first.stdin)
            .await
            .map_err(task_status)?;
        let (tx, rx) = mpsc::channel(16);
        // Output: frames from the shim until the process is done.
        let out_tx = tx.clone();
        tokio::spawn(async move {
            loop {
                // A client gone away ends the copy even while the process
                // is quiet.
                let next = tokio::select! {
                    next = output.next() => next,
                    () = out_tx.closed() => break,
                };
                let item = match next {
                    Ok(Some((stream, data))) => Ok(pb::AttachResponse {
                        stream: u32::from(stream),
                        data,
                    }),
                    Ok(None) => break,
                    Err(e) => Err(Status::unavailable(format!("attach: {e}"))),
                };
                let failed = item.is_err();
                if out_tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        drop(tx);
        // Input: the first message's data, then the client's.
        if first.stdin {
            tokio::spawn(async move {
                let mut msg = Some(first);
                while let Some(m) = msg {
                    if !m.data.is_empty() && input.write(&m.data).await.is_err() {
                        break;
                    }
                    if m.close_stdin {
                        let _ = input.close().await;
                        break;
                    }
                    msg = incoming.message().await.ok().flatten();
                }
            });
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
