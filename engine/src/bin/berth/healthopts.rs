//! The `--health-*` flags of `run` and `create`: `Config.Healthcheck` as
//! the docker CLI builds it, with Go's duration syntax.

use berth_engine::types::duration::parse_go_duration;
use serde_json::{json, Value};

use crate::opts::{ContainerOpts, OptsError};

impl ContainerOpts {
    /// `Config.Healthcheck` from the `--health-*` flags, as the docker CLI
    /// builds it; `None` when no flag is given.
    pub fn healthcheck(&self) -> Result<Option<Value>, OptsError> {
        let duration = |v: &Option<String>, flag: &'static str| -> Result<i64, OptsError> {
            match v {
                None => Ok(0),
                Some(s) => parse_go_duration(s).ok_or_else(|| {
                    crate::opts::flag_error(s, flag, format!("time: invalid duration \"{s}\""))
                }),
            }
        };
        let interval = duration(&self.health_interval, "--health-interval")?;
        let timeout = duration(&self.health_timeout, "--health-timeout")?;
        let start_period = duration(&self.health_start_period, "--health-start-period")?;
        let start_interval = duration(&self.health_start_interval, "--health-start-interval")?;
        let retries = self.health_retries.unwrap_or(0);
        let cmd = self.health_cmd.clone().unwrap_or_default();
        let any = !cmd.is_empty()
            || interval != 0
            || timeout != 0
            || start_period != 0
            || start_interval != 0
            || retries != 0;
        if self.no_healthcheck {
            if any {
                return Err(OptsError::NoHealthcheckConflict);
            }
            return Ok(Some(json!({ "Test": ["NONE"] })));
        }
        if !any {
            return Ok(None);
        }
        for (value, flag) in [
            (interval, "health-interval"),
            (timeout, "health-timeout"),
            (retries, "health-retries"),
            (start_period, "health-start-period"),
            (start_interval, "health-start-interval"),
        ] {
            if value < 0 {
                return Err(OptsError::HealthNegative(flag));
            }
        }
        // As Go writes it: the empty fields left out.
        let mut h = serde_json::Map::new();
        if !cmd.is_empty() {
            h.insert("Test".into(), json!(["CMD-SHELL", cmd]));
        }
        for (key, value) in [
            ("Interval", interval),
            ("Timeout", timeout),
            ("StartPeriod", start_period),
            ("StartInterval", start_interval),
            ("Retries", retries),
        ] {
            if value != 0 {
                h.insert(key.into(), json!(value));
            }
        }
        Ok(Some(Value::Object(h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> ContainerOpts {
        ContainerOpts {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..ContainerOpts::default()
        }
    }

    #[test]
    fn health_flags_as_the_docker_cli() {
        let mut o = opts(&["busybox"]);
        assert!(o.healthcheck().unwrap().is_none());
        o.health_cmd = Some("test -f /ok".into());
        o.health_interval = Some("1s".into());
        let h = o.healthcheck().unwrap().unwrap();
        assert_eq!(h["Test"], json!(["CMD-SHELL", "test -f /ok"]));
        assert_eq!(h["Interval"], 1_000_000_000i64);
        assert!(h.get("Timeout").is_none());
        o.no_healthcheck = true;
        assert!(matches!(
            o.healthcheck(),
            Err(OptsError::NoHealthcheckConflict)
        ));
        let mut o = opts(&["busybox"]);
        o.no_healthcheck = true;
        assert_eq!(o.healthcheck().unwrap().unwrap()["Test"], json!(["NONE"]));
        let mut o = opts(&["busybox"]);
        o.health_interval = Some("-1s".into());
        assert_eq!(
            o.healthcheck().unwrap_err().to_string(),
            "--health-interval cannot be negative"
        );
    }
}
