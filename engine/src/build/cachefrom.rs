//! `--cache-from` (`cachefrom`): steps reused from the history of local
//! images the client names, as Docker's legacy builder does
//! (`image/cache`): a source image fits a step when its history starts
//! with the history of the image so far (its layers too), and its next
//! entry's `created_by` is the line the step would write. The step's
//! result is then the source image itself when that entry is its last,
//! else an image made of the image so far, that history entry and its
//! layer (the step's config as the step makes it); after a first fit only
//! that source is followed, as Docker does. Images that cannot be found
//! are skipped.

use serde_json::{json, Value};

use super::args::StageArgs;
use super::dockerfile::instructions::Instruction;
use super::image::{apply_metadata, nop_string_created_by, resolve_workdir, ImageDoc};
use super::pipeline::{BuildError, Built};
use crate::Engine;

/// The images a build may take steps from.
#[derive(Clone, Default)]
pub struct CacheFrom {
    sources: Vec<Built>,
    /// Whether the build named any (found or not).
    given: bool,
}

fn history(doc: &ImageDoc) -> Vec<Value> {
    doc.top
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn diff_ids(doc: &ImageDoc) -> Vec<Value> {
    doc.top
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn empty_layer(entry: &Value) -> bool {
    entry
        .get("empty_layer")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

impl CacheFrom {
    /// The images `names` names that are here, each with its layers.
    pub async fn load(engine: &Engine, names: &[String]) -> CacheFrom {
        let mut sources = Vec::new();
        for name in names {
            let image = match crate::images::resolve(engine, name).await {
                Ok(image) => image,
                Err(e) => {
                    tracing::info!(image = %name, error = %e, "cache-from image skipped");
                    continue;
                }
            };
            let Ok(raw) = engine.supervisor.read_blob(&image.id).await else {
                continue;
            };
            let value: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            sources.push(Built {
                doc: ImageDoc::from_value(value),
                layers: image.layers,
            });
        }
        CacheFrom {
            sources,
            given: !names.is_empty(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Whether a hit of the build cache may be used: always without
    /// `--cache-from`; with it, as Docker's cache decides, only when the
    /// hit is an ancestor of a source (its history and layers begin one).
    pub fn admits(&self, hit: &Built) -> bool {
        if !self.given {
            return true;
        }
        let mine = history(&hit.doc);
        let my_diffs = diff_ids(&hit.doc);
        self.sources.iter().any(|s| {
            let theirs = history(&s.doc);
            let their_diffs = diff_ids(&s.doc);
            theirs.len() >= mine.len()
                && theirs[..mine.len()] == mine[..]
                && their_diffs.len() >= my_diffs.len()
                && their_diffs[..my_diffs.len()] == my_diffs[..]
        })
    }

    /// A source's result for the step on `parent` that would write the
    /// history line `created_by` and leave the config of `predicted`.
    pub fn probe(
        &mut self,
        parent: &Built,
        created_by: &str,
        predicted: &ImageDoc,
    ) -> Option<Built> {
        let mine = history(&parent.doc);
        let my_diffs = diff_ids(&parent.doc);
        let n = mine.len();
        let fresh = mine.is_empty() && my_diffs.is_empty();
        let mut found = None;
        for (i, target) in self.sources.iter().enumerate() {
            let theirs = history(&target.doc);
            let their_diffs = diff_ids(&target.doc);
            if theirs.len() <= n {
                continue;
            }
            let valid_parent = fresh
                || (theirs[..n] == mine[..]
                    && their_diffs.len() >= my_diffs.len()
                    && their_diffs[..my_diffs.len()] == my_diffs[..]);
            let fits = theirs[n].get("created_by").and_then(Value::as_str) == Some(created_by);
            if valid_parent && fits {
                found = Some(i);
                break;
            }
        }
        let target = self.sources.get(found?)?.clone();
        let theirs = history(&target.doc);
        if n == theirs.len() - 1 {
            return Some(target);
        }
        // The source's layer for that entry: one per non-empty entry.
        let index = theirs[..n].iter().filter(|h| !empty_layer(h)).count();
        let mut layers = parent.layers.clone();
        let mut diffs = my_diffs;
        if !empty_layer(&theirs[n]) {
            layers.push(target.layers.get(index)?.clone());
            diffs.push(diff_ids(&target.doc).get(index)?.clone());
        }
        let mut doc = predicted.clone();
        let mut entries = mine;
        entries.push(theirs[n].clone());
        doc.top.insert("history".into(), Value::Array(entries));
        doc.top.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diffs}),
        );
        if let Some(created) = theirs[n].get("created") {
            doc.top.insert("created".into(), created.clone());
        }
        // Only this source from now on.
        self.sources = vec![target];
        Some(Built { doc, layers })
    }
}

/// The history line a step would write and the config document it would
/// leave (history not yet added): what [`CacheFrom::probe`] compares.
/// `None` for a step that takes nothing from a cache (ARG).
pub fn expected(
    built: &Built,
    args: &StageArgs,
    instruction: &Instruction,
    context: &std::path::Path,
    cmd_set: bool,
) -> Result<Option<(ImageDoc, String)>, BuildError> {
    let shell = built.doc.shell();
    let mut doc = built.doc.clone();
    let created_by = match instruction {
        Instruction::Run(run) => super::pipeline::run_created_by(built, args, run)?,
        Instruction::Copy(copy) | Instruction::Add(copy) => {
            let what = if matches!(instruction, Instruction::Copy(_)) {
                "COPY"
            } else {
                "ADD"
            };
            let sources = super::sources::find_sources(context, &copy.sources)
                .map_err(|source| BuildError::Source { what, source })?;
            let comment = format!(
                "{what} {} in {} ",
                super::sources::sources_hash(&sources),
                copy.dest
            );
            nop_string_created_by(&shell, &comment)
        }
        Instruction::Workdir(path) => {
            let current = doc
                .config
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let dir = resolve_workdir(&current, path);
            doc.config.insert("WorkingDir".into(), json!(dir));
            nop_string_created_by(&shell, &format!("WORKDIR {dir}"))
        }
        Instruction::Arg(_) => return Ok(None),
        other => apply_metadata(&mut doc, other, cmd_set)?.created_by,
    };
    Ok(Some((doc, created_by)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::Layer;

    fn layer(n: u8) -> Layer {
        Layer {
            media_type: "m".into(),
            digest: format!("sha256:{n}"),
            size: 1,
        }
    }

    fn image(entries: &[(&str, bool)], diffs: &[&str]) -> Built {
        let history: Vec<Value> = entries
            .iter()
            .map(|(by, empty)| {
                if *empty {
                    json!({"created": "t", "created_by": by, "empty_layer": true})
                } else {
                    json!({"created": "t", "created_by": by})
                }
            })
            .collect();
        Built {
            doc: ImageDoc::from_value(json!({
                "history": history,
                "rootfs": {"type": "layers", "diff_ids": diffs},
                "config": {"Cmd": ["sh"]},
            })),
            layers: (0..diffs.len() as u8).map(layer).collect(),
        }
    }

    #[test]
    fn a_source_whose_history_continues_the_build_fits() {
        let base = image(&[("base", false)], &["d0"]);
        let source = image(
            &[
                ("base", false),
                ("ENV", true),
                ("RUN", false),
                ("CMD", true),
            ],
            &["d0", "d1"],
        );
        let mut from = CacheFrom {
            sources: vec![image(&[("other", false)], &["x"]), source.clone()],
            given: true,
        };
        assert!(from.admits(&base));
        assert!(!from.admits(&image(&[("base", false)], &["dX"])));
        assert!(CacheFrom::default().admits(&image(&[("x", true)], &[])));
        // A line the source does not have: no fit.
        assert!(from.probe(&base, "LABEL", &base.doc).is_none());
        // Its next entry: an image of the build's own and that entry.
        let step1 = from.probe(&base, "ENV", &base.doc).unwrap();
        assert_eq!(history(&step1.doc).len(), 2);
        assert_eq!(step1.layers.len(), 1);
        let step2 = from.probe(&step1, "RUN", &step1.doc).unwrap();
        assert_eq!(diff_ids(&step2.doc), vec![json!("d0"), json!("d1")]);
        assert_eq!(step2.layers, vec![layer(0), layer(1)]);
        // Its last entry: the source itself.
        let last = from.probe(&step2, "CMD", &step2.doc).unwrap();
        assert_eq!(last.doc, source.doc);
        // A parent whose layers differ from the source's: no fit.
        let other = image(&[("base", false)], &["dX"]);
        let mut from = CacheFrom {
            sources: vec![source],
            given: true,
        };
        assert!(from.probe(&other, "ENV", &other.doc).is_none());
    }
}
