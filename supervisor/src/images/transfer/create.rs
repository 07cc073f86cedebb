//! Images.Create: names as an image a manifest (or index) that is already
//! in the content store with its config and layers, as a builder writes
//! them (a layer from Snapshots.Diff, then the config and manifest through
//! Content.Write). The layers that have no committed snapshot yet are
//! unpacked (those that have one are reused), so a container can be made
//! from the image at once; everything the image needs is held under a
//! lease until its record names it.

use super::*;

impl Images {
    /// Names `target` `name` (replacing what `name` named before).
    pub fn create(
        &self,
        ns: &str,
        name: &str,
        target: Descriptor,
    ) -> Result<ImageRecord, ImageError> {
        crate::metadata::validate_namespace(ns)?;
        let name = Reference::parse(name)?.to_string();
        let lease = self.create_transfer_lease(ns)?;
        let result = self.create_leased(ns, &lease, &name, target);
        if result.is_err() {
            let dropped = self.meta.write().and_then(|tx| {
                tx.delete(Table::Leases, ns, &lease)?;
                tx.commit()
            });
            if let Err(e) = dropped {
                tracing::warn!(namespace = ns, lease, error = %e, "drop the lease of a failed create");
            }
        }
        result
    }

    fn create_leased(
        &self,
        ns: &str,
        lease: &str,
        name: &str,
        target: Descriptor,
    ) -> Result<ImageRecord, ImageError> {
        let manifest = self.platform_manifest(name, &target, &self.platform)?;
        self.hold_contents(
            ns,
            Some(lease),
            &[target.digest.as_str(), manifest.digest.as_str()],
        )?;
        let parsed = parse_manifest(
            &manifest.digest,
            &self.read_document("manifest", &manifest.digest)?,
        )?;
        let blobs: Vec<&str> = std::iter::once(&parsed.config)
            .chain(parsed.layers.iter())
            .map(|blob| blob.digest.as_str())
            .collect();
        for digest in &blobs {
            // Every blob must be there: an image is never named half-made.
            self.content.info(&digest.parse()?)?;
        }
        // One transaction for them all: a build names an image per RUN.
        self.hold_contents(ns, Some(lease), &blobs)?;
        self.unpack_from_store(ns, lease, &manifest.digest)?;
        let record = self.save_image(ns, name, target, Some(lease))?;
        tracing::info!(namespace = ns, image = %record.name, digest = %record.target.digest, "created");
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::content::Digest;
    use crate::metadata::{SnapshotKind, SnapshotRecord};
    use crate::oci::chain_ids;
    use crate::testing::temp_images;

    fn put(images: &Images, data: &[u8]) -> String {
        let digest = Digest::of(data).to_string();
        images.store_bytes(&digest, data).unwrap();
        digest
    }

    fn layer(files: &[(&str, &[u8])]) -> (Vec<u8>, String) {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_data(&mut h, path, *data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let diff_id = Digest::of(&tar).to_string();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&tar).unwrap();
        (e.finish().unwrap(), diff_id)
    }

    /// A manifest of the given layers, its blobs stored as a builder
    /// stores them; `missing` leaves the last layer's blob out.
    fn manifest(images: &Images, layers: &[(Vec<u8>, String)], missing: bool) -> Descriptor {
        let diff_ids: Vec<&String> = layers.iter().map(|(_, d)| d).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": images.platform.architecture,
            "os": images.platform.os,
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let config_digest = put(images, &config);
        let mut descriptors = Vec::new();
        for (index, (blob, _)) in layers.iter().enumerate() {
            let digest = if missing && index == layers.len() - 1 {
                Digest::of(blob).to_string()
            } else {
                put(images, blob)
            };
            descriptors.push(serde_json::json!({
                "mediaType": oci::MEDIA_OCI_LAYER_GZIP, "digest": digest, "size": blob.len()
            }));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::MEDIA_OCI_MANIFEST,
            "config": {"mediaType": oci::MEDIA_OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))
        .unwrap();
        let digest = put(images, &manifest);
        descriptor(oci::MEDIA_OCI_MANIFEST, digest, manifest.len() as u64)
    }

    fn committed(images: &Images, ns: &str, chain_id: &str) -> bool {
        let rx = images.meta.read().unwrap();
        rx.get::<SnapshotRecord>(Table::Snapshots, ns, chain_id)
            .unwrap()
            .is_some_and(|r| r.kind == SnapshotKind::Committed)
    }

    fn leases(images: &Images, ns: &str) -> usize {
        let rx = images.meta.read().unwrap();
        rx.list::<serde_json::Value>(Table::Leases, ns)
            .unwrap()
            .len()
    }

    #[test]
    fn a_stored_manifest_becomes_an_unpacked_image() {
        let (_dir, images) = temp_images();
        let base = layer(&[("a.txt", b"a")]);
        let top = layer(&[("b.txt", b"b")]);
        let target = manifest(&images, &[base.clone(), top.clone()], false);
        let record = images.create("ns", "built:v1", target.clone()).unwrap();
        assert_eq!(record.name, "docker.io/library/built:v1");
        assert_eq!(record.target.digest, target.digest);
        assert_eq!(
            images.get("ns", "built:v1").unwrap().target.digest,
            target.digest
        );
        for chain_id in chain_ids(&[base.1.clone(), top.1.clone()]) {
            assert!(committed(&images, "ns", &chain_id), "{chain_id}");
        }
        assert_eq!(leases(&images, "ns"), 0);

        // A second image on the same base reuses its snapshot.
        let other = layer(&[("c.txt", b"c")]);
        let target = manifest(&images, &[base.clone(), other.clone()], false);
        images.create("ns", "built:v2", target).unwrap();
        assert!(committed(&images, "ns", &chain_ids(&[base.1, other.1])[1]));
    }

    #[test]
    fn a_name_is_replaced() {
        let (_dir, images) = temp_images();
        let first = manifest(&images, &[layer(&[("a", b"1")])], false);
        let second = manifest(&images, &[layer(&[("a", b"2")])], false);
        images.create("ns", "x", first).unwrap();
        let record = images.create("ns", "x", second.clone()).unwrap();
        assert_eq!(record.target.digest, second.digest);
        assert!(record.updated >= record.created);
    }

    #[test]
    fn a_missing_blob_or_bad_name_names_nothing() {
        let (_dir, images) = temp_images();
        let target = manifest(
            &images,
            &[layer(&[("a", b"1")]), layer(&[("b", b"2")])],
            true,
        );
        let err = images.create("ns", "half", target).unwrap_err();
        assert!(matches!(err, ImageError::Content(_)), "{err:?}");
        assert!(images.get("ns", "half").is_err());
        assert_eq!(leases(&images, "ns"), 0);

        let missing = descriptor(
            oci::MEDIA_OCI_MANIFEST,
            format!("sha256:{}", "0".repeat(64)),
            10,
        );
        assert!(images.create("ns", "none", missing).is_err());
        let target = manifest(&images, &[layer(&[("a", b"1")])], false);
        assert!(matches!(
            images.create("ns", "Bad Name", target).unwrap_err(),
            ImageError::Reference(_)
        ));
    }
}
