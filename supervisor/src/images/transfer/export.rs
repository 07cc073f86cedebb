//! Export of image archives.
//!
//! Export writes an OCI image layout: `oci-layout`, `index.json` (one entry
//! per name, annotated with the full name and the tag) and each blob the
//! images reach, once, in digest order, with fixed owners, modes and times,
//! so the same images always make the same bytes. The Docker format adds
//! `manifest.json` and `repositories` beside it, as Docker 25 and later
//! write them, which older `docker load` and `skopeo docker-archive:` read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufWriter, Write};

use super::naming::{familiar, split_name};
use super::tarball::{append_dir, append_file, header, to_json, Exact};
use super::*;

pub(super) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A blob an export needs that the store does not have.
struct Missing {
    blob: String,
    named_by: String,
}

impl Images {
    /// Writes the named images as an archive to `writer`.
    pub fn export(
        &self,
        ns: &str,
        names: &[String],
        format: ArchiveFormat,
        platform: Option<Platform>,
        writer: impl Write,
    ) -> Result<(), ImageError> {
        self.export_unnamed(ns, names, &HashSet::new(), format, platform, writer)
    }

    /// [`Self::export`], writing the images `unnamed` names (a subset of
    /// `names`) without any name, as `docker save` of an image id does.
    pub fn export_unnamed(
        &self,
        ns: &str,
        names: &[String],
        unnamed: &HashSet<String>,
        format: ArchiveFormat,
        platform: Option<Platform>,
        writer: impl Write,
    ) -> Result<(), ImageError> {
        if names.is_empty() {
            return Err(archive_error("export: no image named"));
        }
        let mut index_entries = Vec::new();
        let mut docker: Vec<DockerEntry> = Vec::new();
        let mut docker_at: HashMap<String, usize> = HashMap::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut exported = HashSet::new();
        for name in names {
            let record = self.get(ns, name)?;
            if !exported.insert(record.name.clone()) {
                continue;
            }
            let (repository, tag, _) = split_name(&record.name);
            let target = match (format, &platform) {
                (ArchiveFormat::Oci, None) => record.target.clone(),
                (ArchiveFormat::Oci, Some(p)) => {
                    self.platform_manifest(&record.name, &record.target, p)?
                }
                (ArchiveFormat::Docker, p) => self.platform_manifest(
                    &record.name,
                    &record.target,
                    p.as_ref().unwrap_or(&self.platform),
                )?,
            };
            if let Some(m) = self.collect_blobs(&target, "the image", &mut blobs, 0)? {
                return Err(archive_error(format!(
                    "cannot export {}: blob {} named by {} is not in the content store",
                    record.name, m.blob, m.named_by
                )));
            }
            let anonymous = unnamed.contains(name);
            let mut entry = target.clone();
            if !anonymous {
                entry
                    .annotations
                    .insert(ANNOTATION_IMAGE_NAME.to_string(), record.name.clone());
            }
            if let Some(tag) = tag.filter(|_| !anonymous) {
                entry
                    .annotations
                    .insert(oci::ANNOTATION_REF_NAME.to_string(), tag.to_string());
            }
            index_entries.push(entry);

            if format == ArchiveFormat::Docker {
                let at = match docker_at.get(&target.digest) {
                    Some(at) => *at,
                    None => {
                        let manifest = parse_manifest(
                            &target.digest,
                            &self.read_document("manifest", &target.digest)?,
                        )?;
                        let blob = |d: &str| format!("blobs/sha256/{}", hex_of(d));
                        docker.push(DockerEntry {
                            config: blob(&manifest.config.digest),
                            repo_tags: None,
                            layers: manifest.layers.iter().map(|l| blob(&l.digest)).collect(),
                        });
                        docker_at.insert(target.digest.clone(), docker.len() - 1);
                        docker.len() - 1
                    }
                };
                let digest_only = tag.is_none() && record.name.contains('@');
                if !digest_only && !anonymous {
                    let repository = familiar(repository).to_string();
                    let tag = tag.unwrap_or("latest").to_string();
                    let tags = docker[at].repo_tags.get_or_insert_with(Vec::new);
                    let repo_tag = format!("{repository}:{tag}");
                    if !tags.contains(&repo_tag) {
                        tags.push(repo_tag);
                    }
                    let config = hex_of(&docker[at].config).to_string();
                    repositories
                        .entry(repository)
                        .or_default()
                        .insert(tag, config);
                }
            }
        }

        let index = Index {
            schema_version: 2,
            media_type: oci::MEDIA_OCI_INDEX.to_string(),
            manifests: index_entries,
            annotations: BTreeMap::new(),
        };
        let mut out = tar::Builder::new(BufWriter::with_capacity(1 << 16, writer));
        let written = (|| -> io::Result<()> {
            append_file(&mut out, "oci-layout", OCI_LAYOUT)?;
            append_file(&mut out, "index.json", &to_json(&index)?)?;
            if format == ArchiveFormat::Docker {
                append_file(&mut out, "manifest.json", &to_json(&docker)?)?;
                append_file(&mut out, "repositories", &to_json(&repositories)?)?;
            }
            append_dir(&mut out, "blobs")?;
            append_dir(&mut out, "blobs/sha256")?;
            for (digest, size) in &blobs {
                let file = self
                    .content
                    .open_blob(digest, 0)
                    .map_err(io::Error::other)?;
                let mut header = header(tar::EntryType::Regular, *size, 0o644);
                out.append_data(
                    &mut header,
                    format!("blobs/sha256/{}", digest.hex()),
                    Exact {
                        inner: file,
                        left: *size,
                        digest: digest.to_string(),
                    },
                )?;
            }
            out.into_inner()?.flush()
        })();
        written.map_err(|e| archive_error(format!("write the archive: {e}")))?;
        tracing::info!(
            namespace = ns,
            images = names.len(),
            blobs = blobs.len(),
            "exported"
        );
        Ok(())
    }

    /// Adds `desc` and the blobs it reaches to `blobs`. From an index, the
    /// manifests the store has whole; Some when a needed blob is missing.
    fn collect_blobs(
        &self,
        desc: &Descriptor,
        named_by: &str,
        blobs: &mut BTreeMap<Digest, u64>,
        depth: usize,
    ) -> Result<Option<Missing>, ImageError> {
        let missing = |d: &Descriptor| Missing {
            blob: d.digest.clone(),
            named_by: named_by.to_string(),
        };
        let digest: Digest = desc.digest.parse()?;
        let bytes = match self.read_document("manifest", &desc.digest) {
            Ok(b) => b,
            Err(ImageError::Content(ContentError::NotFound(_))) => return Ok(Some(missing(desc))),
            Err(e) => return Err(e),
        };
        blobs.insert(digest, bytes.len() as u64);
        match document_kind(&desc.media_type, &bytes) {
            Kind::Index if depth < MAX_DEPTH => {
                let index = parse_index(&desc.digest, &bytes)?;
                let named_by = format!("index {}", desc.digest);
                let mut complete = 0;
                for child in &index.manifests {
                    let mut more = BTreeMap::new();
                    match self.collect_blobs(child, &named_by, &mut more, depth + 1)? {
                        None => {
                            blobs.extend(more);
                            complete += 1;
                        }
                        // A pull keeps one platform: export what is whole.
                        Some(m) => {
                            tracing::debug!(blob = %m.blob, named_by = %m.named_by, "leave out of export")
                        }
                    }
                }
                if complete == 0 {
                    return Err(archive_error(format!(
                        "no manifest of index {} is in the content store with all its blobs",
                        desc.digest
                    )));
                }
                Ok(None)
            }
            Kind::Manifest => {
                let manifest = parse_manifest(&desc.digest, &bytes)?;
                let named_by = format!("manifest {}", desc.digest);
                for (i, d) in std::iter::once(&manifest.config)
                    .chain(&manifest.layers)
                    .enumerate()
                {
                    let digest: Digest = d.digest.parse()?;
                    match self.content.info(&digest) {
                        Ok(info) => {
                            blobs.insert(digest, info.size);
                        }
                        // Foreign layers are fetched from their URLs.
                        Err(ContentError::NotFound(_)) if i > 0 && !d.urls.is_empty() => {}
                        Err(ContentError::NotFound(_)) => {
                            return Ok(Some(Missing {
                                blob: d.digest.clone(),
                                named_by,
                            }))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(None)
            }
            _ => Err(ImageError::BadDocument {
                what: "manifest",
                digest: desc.digest.clone(),
                reason: format!(
                    "media type {:?} is neither an image manifest nor an index (or nests too deep)",
                    desc.media_type
                ),
            }),
        }
    }
}
