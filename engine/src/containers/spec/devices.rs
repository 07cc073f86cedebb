//! Device nodes (`HostConfig.Devices`, every host device when privileged)
//! and the device cgroup rules (Docker's defaults, `DeviceCgroupRules`).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{Host, HostDevice, SpecError};
use crate::types::HostConfig;

/// Docker's device cgroup rules: deny all, then the standard character
/// devices (the runtime adds its own for ptmx, pts and the like), and
/// never fuse.
pub fn default_rules() -> Vec<Value> {
    let allow = |major: i64, minor: i64| json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"});
    vec![
        json!({"allow": false, "access": "rwm"}),
        allow(1, 5),
        allow(1, 3),
        allow(1, 9),
        allow(1, 8),
        allow(5, 0),
        allow(5, 1),
        json!({"allow": false, "type": "c", "major": 10, "minor": 229, "access": "rwm"}),
    ]
}

fn device_json(path: &Path, d: &HostDevice) -> Value {
    json!({
        "path": path, "type": d.kind.to_string(), "major": d.major, "minor": d.minor,
        "fileMode": d.file_mode, "uid": d.uid, "gid": d.gid,
    })
}

fn rule_json(d: &HostDevice, access: &str) -> Value {
    json!({"allow": true, "type": d.kind.to_string(), "major": d.major, "minor": d.minor,
           "access": access})
}

/// The devices of one `--device host[:container[:perms]]`: the node, or
/// every node below a directory.
fn from_mapping(
    host: &dyn Host,
    on_host: &str,
    in_container: &str,
    perms: &str,
) -> Result<Vec<(PathBuf, HostDevice)>, SpecError> {
    let fail = |reason: String| SpecError::Device {
        path: on_host.to_string(),
        reason,
    };
    let target = if in_container.is_empty() {
        on_host
    } else {
        in_container
    };
    if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
        return Err(fail(format!("invalid cgroup permissions {perms:?}")));
    }
    match host.device(Path::new(on_host)) {
        Ok(Some(d)) => Ok(vec![(PathBuf::from(target), d)]),
        Ok(None) => {
            if host.stat(Path::new(on_host)) == Some(true) {
                let found: Vec<_> = host
                    .devices_under(Path::new(on_host))
                    .into_iter()
                    .filter_map(|(p, d)| {
                        let rest = p.strip_prefix(on_host).ok()?;
                        Some((Path::new(target).join(rest), d))
                    })
                    .collect();
                if !found.is_empty() {
                    return Ok(found);
                }
            }
            Err(fail("not a device node".into()))
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// `linux.devices` and `linux.resources.devices`.
pub fn devices(hc: &HostConfig, host: &dyn Host) -> Result<(Vec<Value>, Vec<Value>), SpecError> {
    let mut devs = Vec::new();
    let mut rules = default_rules();
    if hc.privileged {
        for (path, d) in host.devices_under(Path::new("/dev")) {
            devs.push(device_json(&path, &d));
        }
        for m in hc.devices.iter().flatten() {
            if m.path_on_host == m.path_in_container || m.path_in_container.is_empty() {
                continue;
            }
            for (path, d) in from_mapping(host, &m.path_on_host, &m.path_in_container, "rwm")? {
                devs.push(device_json(&path, &d));
            }
        }
        rules = vec![json!({"allow": true, "access": "rwm"})];
        return Ok((devs, rules));
    }
    for m in hc.devices.iter().flatten() {
        let perms = if m.cgroup_permissions.is_empty() {
            "rwm"
        } else {
            &m.cgroup_permissions
        };
        for (path, d) in from_mapping(host, &m.path_on_host, &m.path_in_container, perms)? {
            devs.push(device_json(&path, &d));
            rules.push(rule_json(&d, perms));
        }
    }
    for rule in hc.device_cgroup_rules.iter().flatten() {
        rules.push(parse_cgroup_rule(rule)?);
    }
    Ok((devs, rules))
}

/// "c 1:3 mr", "a *:* rwm", "b 8:* r".
pub fn parse_cgroup_rule(rule: &str) -> Result<Value, SpecError> {
    let bad = || SpecError::DeviceCgroupRule(rule.to_string());
    let parts: Vec<&str> = rule.split(' ').collect();
    let [kind, numbers, access] = parts[..] else {
        return Err(bad());
    };
    if !["a", "b", "c"].contains(&kind) {
        return Err(bad());
    }
    let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
    let number = |n: &str| -> Result<Value, SpecError> {
        if n == "*" {
            Ok(json!(-1))
        } else {
            n.parse::<i64>().map(|v| json!(v)).map_err(|_| bad())
        }
    };
    if access.is_empty() || access.len() > 3 || !access.chars().all(|c| "rwm".contains(c)) {
        return Err(bad());
    }
    Ok(
        json!({"allow": true, "type": kind, "major": number(major)?, "minor": number(minor)?,
              "access": access}),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::FakeHost;
    use super::*;
    use crate::types::DeviceMapping;

    fn with_devices(
        devices: &[(&str, &str, &str)],
        rules: &[&str],
        privileged: bool,
    ) -> HostConfig {
        HostConfig {
            devices: Some(
                devices
                    .iter()
                    .map(|(h, c, p)| DeviceMapping {
                        path_on_host: h.to_string(),
                        path_in_container: c.to_string(),
                        cgroup_permissions: p.to_string(),
                    })
                    .collect(),
            ),
            device_cgroup_rules: Some(rules.iter().map(|s| s.to_string()).collect()),
            privileged,
            ..Default::default()
        }
    }

    #[test]
    fn mapped_devices_get_a_node_and_a_rule() {
        let host = FakeHost::default();
        let hc = with_devices(
            &[("/dev/fuse", "/dev/myfuse", "rw"), ("/dev/snd", "", "")],
            &["c 42:* rmw"],
            false,
        );
        let (devs, rules) = devices(&hc, &host).unwrap();
        assert_eq!(devs[0]["path"], "/dev/myfuse");
        assert_eq!(
            (devs[0]["major"].clone(), devs[0]["minor"].clone()),
            (json!(10), json!(229))
        );
        assert_eq!(devs[1]["path"], "/dev/snd/timer");
        let n = default_rules().len();
        assert_eq!(rules[..n], default_rules()[..]);
        assert_eq!(
            rules[n],
            json!({"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"})
        );
        assert_eq!(rules[n + 1]["access"], "rwm");
        assert_eq!(
            rules[n + 2],
            json!({"allow": true, "type": "c", "major": 42, "minor": -1, "access": "rmw"})
        );
    }

    #[test]
    fn bad_devices_and_rules_are_refused() {
        let host = FakeHost::default();
        let err = devices(
            &with_devices(&[("/dev/nope", "", "rwm")], &[], false),
            &host,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with(
            "error gathering device information while adding custom device \"/dev/nope\""
        ));
        assert!(devices(&with_devices(&[("/etc/hosts", "", "")], &[], false), &host).is_err());
        for rule in ["x 1:2 r", "c 1 r", "c a:1 r", "c 1:2 rwx", "c 1:2"] {
            assert_eq!(
                parse_cgroup_rule(rule).unwrap_err().to_string(),
                format!("invalid device cgroup rule format: '{rule}'")
            );
        }
    }

    #[test]
    fn privileged_gets_every_host_device() {
        let host = FakeHost::default();
        let (devs, rules) = devices(&with_devices(&[], &[], true), &host).unwrap();
        assert!(devs.iter().any(|d| d["path"] == "/dev/fuse"));
        assert_eq!(rules, [json!({"allow": true, "access": "rwm"})]);
    }
}
