//! The container a RUN step runs in, made as the engine makes a run
//! container: its spec from the engine's spec builder
//! ([`crate::containers::runspec::container_spec`]) with the build's
//! HostConfig (network mode, `/etc/hosts` extras, `/dev/shm` size, memory,
//! CPU and ulimits), its network namespace and endpoint from
//! [`crate::network::attach`] before its task starts, and both taken away
//! ([`StepContainer::remove`]) whatever the end.
//!
//! A build container is not one of the engine's containers (it is in no
//! list, no event names it): the engine's record is made here only to
//! drive the spec and the network code, which read nothing else.

use std::time::SystemTime;

use berth_proto::containers::v1 as containers;

use super::pipeline::BuildError;
use crate::containers::record::{ContainerRecord, RunState};
use crate::containers::ContainerError;
use crate::images::{Image, ImageConfigFile};
use crate::types::{ContainerConfig, HostConfig};
use crate::Engine;

/// How a build's RUN containers run: `POST /build`'s `networkmode`,
/// `extrahosts`, `shmsize` and resource options, as a HostConfig.
pub fn host_config(
    network_mode: &str,
    extra_hosts: Vec<String>,
    resources: HostConfig,
) -> HostConfig {
    HostConfig {
        network_mode: match network_mode {
            "" => "default".into(),
            m => m.to_string(),
        },
        extra_hosts: (!extra_hosts.is_empty()).then_some(extra_hosts),
        runtime: "runc".into(),
        ..resources
    }
}

/// Checks the build's network mode before any step: a network must exist,
/// `container:<id>` is refused as Docker's legacy builder refuses it.
pub fn check_host_config(engine: &Engine, hc: &HostConfig) -> Result<(), BuildError> {
    let mode = hc.network_mode.as_str();
    if mode.starts_with("container:") {
        return Err(BuildError::RunContainer(Box::new(
            ContainerError::InvalidConfig(format!(
                "network mode {mode:?} is not supported for builds"
            )),
        )));
    }
    let mut record = record("check", &ContainerConfig::default(), hc);
    crate::network::check_create(engine, &mut record).map_err(BuildError::RunNetwork)?;
    let image = ImageConfigFile {
        config: ContainerConfig {
            cmd: Some(vec!["true".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let spec_input = crate::containers::spec::SpecInput {
        id: "check",
        config: &record.config,
        host_config: hc,
        image: &image,
        user: &record.user,
        group_add: &record.group_add,
        files: &Default::default(),
        peers: &Default::default(),
        init_path: None,
    };
    crate::containers::spec::check(&spec_input, &crate::containers::spec::SystemHost)
        .map_err(|e| BuildError::RunContainer(Box::new(e.into())))
}

fn record(id: &str, config: &ContainerConfig, hc: &HostConfig) -> ContainerRecord {
    ContainerRecord {
        id: id.to_string(),
        name: format!("build-{}", &id[..id.len().min(12)]),
        created: SystemTime::now(),
        image: String::new(),
        image_id: String::new(),
        image_ref: String::new(),
        config: config.clone(),
        host_config: hc.clone(),
        networking_config: None,
        path: String::new(),
        args: Vec::new(),
        state: RunState::default(),
        restart_count: 0,
        user: crate::containers::runspec::provisional_user(&config.user),
        group_add: Vec::new(),
        mount_points: Vec::new(),
    }
}

/// A RUN step's container, made in the supervisor on a prepared snapshot.
pub struct StepContainer {
    record: ContainerRecord,
}

impl StepContainer {
    /// Makes the container `id` of `image` (the step's image, named in the
    /// supervisor as `image_name`) on snapshot `key`, running `argv` with
    /// `env` under the image's own.
    #[allow(
        clippy::too_many_arguments,
        reason = "the parts of one container, each from a different place"
    )]
    pub async fn create(
        engine: &Engine,
        id: &str,
        image_name: &str,
        image: &ImageConfigFile,
        key: &str,
        argv: &[String],
        env: &[String],
        hc: &HostConfig,
    ) -> Result<StepContainer, BuildError> {
        let config = ContainerConfig {
            hostname: id[..12].to_string(),
            entrypoint: Some(argv.to_vec()),
            env: Some(env.to_vec()),
            ..Default::default()
        };
        let mut record = record(id, &config, hc);
        let dir = engine.paths.container_dir(id);
        let io = |source| {
            BuildError::RunContainer(Box::new(ContainerError::Io {
                what: "create directory",
                path: dir.clone(),
                source,
            }))
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let made = StepContainer {
            record: record.clone(),
        };
        let image = Image {
            name: image_name.to_string(),
            id: String::new(),
            target_digest: String::new(),
            config: image.clone(),
            layers: Vec::new(),
            record: Default::default(),
        };
        let spec = crate::containers::runspec::container_spec(engine, &record, &image)
            .map_err(|e| BuildError::RunContainer(Box::new(e)));
        let spec = match spec {
            Ok(spec) => spec,
            Err(e) => {
                made.remove_files(engine);
                return Err(e);
            }
        };
        let request = containers::CreateContainerRequest {
            id: id.to_string(),
            image: image_name.to_string(),
            snapshot_key: key.to_string(),
            labels: [("berth.build".to_string(), "1".to_string())].into(),
            spec,
            ..Default::default()
        };
        if let Err(e) = engine.supervisor.create_container(request).await {
            made.remove_files(engine);
            return Err(e.into());
        }
        // A user by name: resolved in the snapshot's own files, and the
        // spec made again with the numbers.
        if crate::containers::runspec::needs_resolution(&record) {
            let resolved = async {
                let (user, groups) = crate::containers::runspec::resolve_user(engine, &record)
                    .await
                    .map_err(|e| BuildError::RunContainer(Box::new(e)))?;
                record.user = user;
                record.group_add = groups;
                let spec = crate::containers::runspec::container_spec(engine, &record, &image)
                    .map_err(|e| BuildError::RunContainer(Box::new(e)))?;
                engine.supervisor.update_container_spec(id, spec).await?;
                Ok::<(), BuildError>(())
            }
            .await;
            if let Err(e) = resolved {
                made.remove(engine).await;
                return Err(e);
            }
        }
        Ok(StepContainer { record })
    }

    /// Its network namespace and endpoint, before its task starts.
    pub async fn attach_network(&self, engine: &Engine) -> Result<(), BuildError> {
        crate::network::attach(engine, &self.record)
            .await
            .map_err(BuildError::RunNetwork)
    }

    fn remove_files(&self, engine: &Engine) {
        let dir = engine.paths.container_dir(&self.record.id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(container = %self.record.id, error = %e, "remove a build container's directory");
            }
        }
    }

    /// Removes the container (its task must be gone), its network and its
    /// files. Failures are logged.
    pub async fn remove(&self, engine: &Engine) {
        if let Err(e) = engine.supervisor.delete_container(&self.record.id).await {
            tracing::warn!(container = %self.record.id, error = %e, "remove a build container");
        }
        crate::network::release(engine, &self.record.id).await;
        self.remove_files(engine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builds_host_config() {
        let hc = host_config(
            "",
            vec!["a:1.2.3.4".into()],
            HostConfig {
                memory: 64 << 20,
                shm_size: 1 << 20,
                ..Default::default()
            },
        );
        assert_eq!(hc.network_mode, "default");
        assert_eq!(hc.extra_hosts, Some(vec!["a:1.2.3.4".to_string()]));
        assert_eq!(hc.memory, 64 << 20);
        assert_eq!(hc.shm_size, 1 << 20);
        assert_eq!(
            host_config("host", vec![], HostConfig::default()).extra_hosts,
            None
        );
    }
}
