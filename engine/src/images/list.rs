//! `GET /images/json` (with Docker's filters), `GET /images/{name}/json`
//! and `GET /images/{name}/history`, as Docker's data model.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::names::{familiar, glob_match, is_digested, is_tagged, repository_of};
use super::{catalog, lookup, Image, ImageError};
use crate::types::ContainerConfig;
use crate::Engine;

/// An entry of `GET /images/json`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Summary {
    pub id: String,
    pub parent_id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub created: i64,
    pub size: i64,
    pub shared_size: i64,
    pub virtual_size: i64,
    pub labels: BTreeMap<String, String>,
    pub containers: i64,
}

/// `GET /images/{name}/json`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inspect {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub parent: String,
    pub comment: String,
    pub created: String,
    pub container: String,
    pub container_config: ContainerConfig,
    pub docker_version: String,
    pub author: String,
    pub config: ContainerConfig,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub os: String,
    pub size: i64,
    pub virtual_size: i64,
    pub graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    pub root_fs: RootFs,
    pub metadata: Metadata,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriver {
    pub name: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootFs {
    #[serde(rename = "Type")]
    pub kind: String,
    pub layers: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    pub last_tag_time: String,
}

/// An entry of `GET /images/{name}/history`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryEntry {
    pub id: String,
    pub created: i64,
    pub created_by: String,
    pub tags: Option<Vec<String>>,
    pub size: i64,
    pub comment: String,
}

/// Docker's image filters, decoded from `filters`.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub dangling: Option<bool>,
    pub reference: Vec<String>,
    pub label: Vec<String>,
    pub before: Option<String>,
    pub since: Option<String>,
}

impl Filters {
    /// From the `filters` query parameter's JSON: `{"key":{"value":true}}`
    /// or the older `{"key":["value"]}`.
    pub fn parse(json: Option<&Value>) -> Result<Filters, ImageError> {
        let mut filters = Filters::default();
        let Some(Value::Object(map)) = json else {
            return Ok(filters);
        };
        for (key, values) in map {
            let values: Vec<String> = match values {
                Value::Object(m) => m.keys().cloned().collect(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            };
            match key.as_str() {
                "dangling" => {
                    for v in &values {
                        filters.dangling = Some(match v.as_str() {
                            "true" | "1" => true,
                            "false" | "0" => false,
                            other => {
                                return Err(ImageError::InvalidArgument(format!(
                                    "invalid filter 'dangling={other}'"
                                )))
                            }
                        });
                    }
                }
                "reference" => filters.reference = values,
                "label" => filters.label = values,
                "before" => filters.before = values.into_iter().next(),
                "since" => filters.since = values.into_iter().next(),
                other => {
                    return Err(ImageError::InvalidArgument(format!(
                        "invalid filter '{other}'"
                    )))
                }
            }
        }
        Ok(filters)
    }
}

/// The stored images grouped by id: each image once, with all its names.
pub async fn grouped(engine: &Engine) -> Result<Vec<(Image, Vec<String>)>, ImageError> {
    let mut by_id: BTreeMap<String, (Image, Vec<String>)> = BTreeMap::new();
    for image in catalog(engine).await? {
        let entry = by_id
            .entry(image.id.clone())
            .or_insert_with(|| (image.clone(), Vec::new()));
        entry.1.push(image.name.clone());
    }
    Ok(by_id.into_values().collect())
}

/// `RepoTags`: the familiar tagged names.
pub fn repo_tags(names: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = names
        .iter()
        .filter(|n| is_tagged(n))
        .map(|n| familiar(n.split('@').next().unwrap_or(n)))
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// `RepoDigests`: `repository@digest` for each repository it is named in.
pub fn repo_digests(image: &Image, names: &[String]) -> Vec<String> {
    let mut digests: Vec<String> = names
        .iter()
        .map(|n| {
            if is_digested(n) && !is_tagged(n) {
                familiar(n)
            } else {
                format!("{}@{}", familiar(repository_of(n)), image.target_digest)
            }
        })
        .collect();
    digests.sort();
    digests.dedup();
    digests
}

/// Seconds since the epoch of an RFC 3339 time; 0 when absent or invalid.
pub fn unix_time(rfc3339: Option<&str>) -> i64 {
    rfc3339.and_then(parse_rfc3339).unwrap_or(0)
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    // YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        r if r.len() == 6 => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            sign * (r.get(1..3)?.parse::<i64>().ok()? * 3600
                + r.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + sec - offset)
}

fn labels(image: &Image) -> BTreeMap<String, String> {
    image.config.config.labels.clone().unwrap_or_default()
}

fn summary(image: &Image, names: &[String]) -> Summary {
    let size = image.record.size;
    Summary {
        id: image.id.clone(),
        parent_id: String::new(),
        repo_tags: repo_tags(names),
        repo_digests: repo_digests(image, names),
        created: unix_time(image.config.created.as_deref()),
        size,
        shared_size: -1,
        virtual_size: size,
        labels: labels(image),
        containers: -1,
    }
}

fn matches_label(image: &Image, wanted: &str) -> bool {
    let labels = labels(image);
    match wanted.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(wanted),
    }
}

/// Docker's `reference` filter: the pattern against each familiar name,
/// and against its repository when the pattern has no tag.
fn matches_reference(names: &[String], pattern: &str) -> bool {
    names.iter().any(|n| {
        let shown = familiar(n);
        glob_match(pattern, &shown) || glob_match(pattern, &familiar(repository_of(n)))
    })
}

async fn created_of(engine: &Engine, name: &str) -> Result<i64, ImageError> {
    let found = lookup(engine, name).await?;
    Ok(unix_time(found.image.config.created.as_deref()))
}

/// `GET /images/json`.
pub async fn list(
    engine: &Engine,
    all: bool,
    filters: &Filters,
) -> Result<Vec<Summary>, ImageError> {
    let _ = all; // Intermediate images come with builds; none exist yet.
    let groups = grouped(engine).await?;
    let before = match &filters.before {
        Some(n) => Some(created_of(engine, n).await?),
        None => None,
    };
    let since = match &filters.since {
        Some(n) => Some(created_of(engine, n).await?),
        None => None,
    };
    let mut out = Vec::new();
    for (image, names) in &groups {
        let s = summary(image, names);
        let dangling = s.repo_tags.is_empty();
        if filters.dangling.is_some_and(|d| d != dangling) {
            continue;
        }
        if !filters.reference.is_empty()
            && !filters
                .reference
                .iter()
                .any(|p| matches_reference(names, p))
        {
            continue;
        }
        if !filters.label.iter().all(|l| matches_label(image, l)) {
            continue;
        }
        if before.is_some_and(|t| s.created >= t) || since.is_some_and(|t| s.created <= t) {
            continue;
        }
        out.push(s);
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// `GET /images/{name}/json`.
pub async fn inspect(engine: &Engine, name: &str) -> Result<Inspect, ImageError> {
    let found = lookup(engine, name).await?;
    let image = &found.image;
    let c = &image.config;
    let updated = image
        .record
        .updated_at
        .as_ref()
        .map(|t| format_time(t.seconds, t.nanos))
        .unwrap_or_default();
    Ok(Inspect {
        id: image.id.clone(),
        repo_tags: repo_tags(&found.names),
        repo_digests: repo_digests(image, &found.names),
        parent: engine
            .build_cache
            .parent(&image.id)
            .ok()
            .flatten()
            .unwrap_or_default(),
        comment: c.comment.clone().unwrap_or_default(),
        created: c.created.clone().unwrap_or_default(),
        container: c.container.clone().unwrap_or_default(),
        container_config: c.container_config.clone().unwrap_or_default(),
        docker_version: c.docker_version.clone().unwrap_or_default(),
        author: c.author.clone().unwrap_or_default(),
        config: c.config.clone(),
        architecture: c.architecture.clone(),
        variant: c.variant.clone().filter(|v| !v.is_empty()),
        os: c.os.clone(),
        size: image.record.size,
        virtual_size: image.record.size,
        graph_driver: GraphDriver {
            name: "overlay2".into(),
            data: BTreeMap::new(),
        },
        root_fs: RootFs {
            kind: if c.rootfs.kind.is_empty() {
                "layers".into()
            } else {
                c.rootfs.kind.clone()
            },
            layers: c.rootfs.diff_ids.clone(),
        },
        metadata: Metadata {
            last_tag_time: updated,
        },
    })
}

/// RFC 3339 with nanoseconds, UTC, as Go writes a time.
pub fn format_time(seconds: i64, nanos: i32) -> String {
    let days = seconds.div_euclid(86400);
    let secs = seconds.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let frac = if nanos > 0 {
        format!(".{:09}", nanos).trim_end_matches('0').to_string()
    } else {
        String::new()
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `GET /images/{name}/history`: newest first.
pub async fn history(engine: &Engine, name: &str) -> Result<Vec<HistoryEntry>, ImageError> {
    let found = lookup(engine, name).await?;
    let image = &found.image;
    let mut layers = image.layers.iter();
    let mut entries: Vec<HistoryEntry> = Vec::new();
    let history = if image.config.history.is_empty() {
        // No history recorded: one entry per layer.
        image
            .layers
            .iter()
            .map(|_| super::History::default())
            .collect()
    } else {
        image.config.history.clone()
    };
    for h in &history {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map_or(0, |l| l.size)
        };
        entries.push(HistoryEntry {
            id: "<missing>".into(),
            created: unix_time(h.created.as_deref().or(image.config.created.as_deref())),
            created_by: h.created_by.clone().unwrap_or_default(),
            tags: None,
            size,
            comment: h.comment.clone().unwrap_or_default(),
        });
    }
    entries.reverse();
    if let Some(top) = entries.first_mut() {
        top.id = image.id.clone();
        top.tags = Some(repo_tags(&found.names));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(unix_time(Some("1970-01-01T00:00:00Z")), 0);
        assert_eq!(
            unix_time(Some("2024-09-26T21:31:42.123456789Z")),
            1727386302
        );
        assert_eq!(unix_time(Some("2024-09-26T23:31:42+02:00")), 1727386302);
        assert_eq!(unix_time(Some("bad")), 0);
        assert_eq!(format_time(1727386302, 0), "2024-09-26T21:31:42Z");
        assert_eq!(
            format_time(1727386302, 500_000_000),
            "2024-09-26T21:31:42.5Z"
        );
    }

    #[test]
    fn filters_parse_both_forms() {
        let v: Value = serde_json::json!({"dangling": {"true": true}, "reference": ["busy*"]});
        let f = Filters::parse(Some(&v)).unwrap();
        assert_eq!(f.dangling, Some(true));
        assert_eq!(f.reference, ["busy*"]);
        let bad: Value = serde_json::json!({"nope": ["x"]});
        assert!(Filters::parse(Some(&bad)).is_err());
        let bad: Value = serde_json::json!({"dangling": ["maybe"]});
        assert!(Filters::parse(Some(&bad)).is_err());
    }

    #[test]
    fn tags_and_digests() {
        let names = vec![
            "docker.io/library/busybox:latest".to_string(),
            "127.0.0.1:5000/busybox:1".to_string(),
        ];
        assert_eq!(
            repo_tags(&names),
            ["127.0.0.1:5000/busybox:1", "busybox:latest"]
        );
        assert!(matches_reference(&names, "busybox"));
        assert!(matches_reference(&names, "busy*:latest"));
        assert!(!matches_reference(&names, "alpine"));
    }
}
