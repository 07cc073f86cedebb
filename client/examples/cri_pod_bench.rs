//! The CRI pod benchmark's client (bench/cri.sh): the calls kubelet makes
//! to start and remove a pod with one container, over one held connection
//! as kubelet holds it, timed on the client side, against any CRI socket
//! (berth-supervisord's or containerd's).
//!
//! Each round: RunPodSandbox + CreateContainer + StartContainer ("up"),
//! then StopPodSandbox + RemovePodSandbox ("down"). Prints one line per
//! round and figure: `up<TAB>milliseconds` and `down<TAB>milliseconds`.
//!
//!   cri_pod_bench SOCKET ROUNDS IMAGE LOG_DIR CGROUP_PARENT
//!
//! The image must be pulled already (kubelet pulls before it creates).

use std::path::PathBuf;
use std::time::Instant;

use berth_proto::cri::v1 as cri;
use cri::runtime_service_client::RuntimeServiceClient;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, rounds, image, log_dir, cgroup_parent] = args.as_slice() else {
        eprintln!("usage: cri_pod_bench SOCKET ROUNDS IMAGE LOG_DIR CGROUP_PARENT");
        std::process::exit(2);
    };
    let Ok(rounds) = rounds.parse::<u32>() else {
        eprintln!("cri_pod_bench: ROUNDS must be a number, not {rounds:?}");
        std::process::exit(2);
    };
    if let Err(e) = run(socket, rounds, image, log_dir, cgroup_parent).await {
        eprintln!("cri_pod_bench: {e}");
        std::process::exit(1);
    }
}

async fn run(
    socket: &str,
    rounds: u32,
    image: &str,
    log_dir: &str,
    cgroup_parent: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let channel = berth_client::connect(&PathBuf::from(socket)).await?;
    let mut client = RuntimeServiceClient::new(channel);
    // One call first: the connection is up before the clock starts.
    client.version(cri::VersionRequest::default()).await?;
    let stamp = std::process::id();
    for round in 0..rounds {
        let pod_logs = format!("{log_dir}/grpc-{stamp}-{round}");
        std::fs::create_dir_all(&pod_logs)?;
        let pod = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: format!("grpc-bench-{round}"),
                uid: format!("uid-{stamp}-{round}"),
                namespace: "bench".into(),
                attempt: 0,
            }),
            log_directory: pod_logs,
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let container = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "sleeper".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "3600".into()],
            log_path: "sleeper.log".into(),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        };

        let t0 = Instant::now();
        let pod_id = client
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        let container_id = client
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(container),
                sandbox_config: Some(pod),
            })
            .await?
            .into_inner()
            .container_id;
        client
            .start_container(cri::StartContainerRequest { container_id })
            .await?;
        println!("up\t{:.3}", t0.elapsed().as_secs_f64() * 1e3);

        let t0 = Instant::now();
        client
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await?;
        client
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod_id,
            })
            .await?;
        println!("down\t{:.3}", t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}
