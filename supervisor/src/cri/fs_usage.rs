//! The image filesystem's usage, as ImageFsInfo reports it.
//!
//! Walking the snapshots costs time that grows with every image and every
//! container's writes, and kubelet (and `crictl run`) ask often. So, as
//! containerd samples its snapshots every 10 s and answers from the last
//! sample, the walk is done at most once a period: the first call walks,
//! later ones answer from the sample and, once it is older than the
//! period, start a new walk in the background for the calls after.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::images::{usage, CriImageError};

/// How old a sample may be before the next call starts a new walk.
pub const PERIOD: Duration = Duration::from_secs(10);

/// One walk's result.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub bytes: u64,
    pub inodes: u64,
    /// When the walk began (nanoseconds since the epoch): the timestamp
    /// ImageFsInfo gives.
    pub timestamp_ns: i64,
    taken: Instant,
}

#[derive(Default)]
struct State {
    last: Option<Sample>,
    walking: bool,
}

/// The usage of one directory, sampled at most once a [`PERIOD`].
pub struct FsUsage {
    dir: PathBuf,
    state: Mutex<State>,
}

impl FsUsage {
    pub fn new(dir: PathBuf) -> Arc<FsUsage> {
        Arc::new(FsUsage {
            dir,
            state: Mutex::new(State::default()),
        })
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The latest sample; a walk when there is none yet.
    pub async fn get(self: &Arc<Self>) -> Result<Sample, CriImageError> {
        let (last, walk_behind) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match state.last {
                Some(s) if s.taken.elapsed() < PERIOD || state.walking => (Some(s), false),
                Some(s) => {
                    state.walking = true;
                    (Some(s), true)
                }
                None => (None, false),
            }
        };
        match last {
            Some(sample) => {
                if walk_behind {
                    let this = Arc::clone(self);
                    tokio::task::spawn_blocking(move || {
                        let walked = this.walk();
                        if let Err(e) = &walked {
                            tracing::warn!(error = %e, "image filesystem usage");
                        }
                    });
                }
                Ok(sample)
            }
            None => {
                let this = Arc::clone(self);
                tokio::task::spawn_blocking(move || this.walk())
                    .await
                    .map_err(|e| CriImageError::Usage {
                        path: self.dir.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?
            }
        }
    }

    /// Walks the directory and keeps the result.
    fn walk(&self) -> Result<Sample, CriImageError> {
        let taken = Instant::now();
        let timestamp_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let walked = usage(&self.dir);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.walking = false;
        let (bytes, inodes) = walked?;
        let sample = Sample {
            bytes,
            inodes,
            timestamp_ns,
            taken,
        };
        state.last = Some(sample);
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sample_is_reused_within_the_period_and_refreshed_after() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 8192]).unwrap();
        let usage = FsUsage::new(dir.path().to_path_buf());
        let first = usage.get().await.unwrap();
        assert!(first.bytes >= 8192);
        assert_eq!(first.inodes, 2);
        // More data: the sample within the period does not see it.
        std::fs::write(dir.path().join("b"), vec![1u8; 8192]).unwrap();
        let second = usage.get().await.unwrap();
        assert_eq!(second.inodes, 2);
        assert_eq!(second.timestamp_ns, first.timestamp_ns);
        // An old sample is answered once more while a walk runs behind it.
        usage.state.lock().unwrap().last.as_mut().unwrap().taken -= PERIOD;
        let stale = usage.get().await.unwrap();
        assert_eq!(stale.inodes, 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = usage.get().await.unwrap();
            if s.inodes == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "the walk behind never landed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
