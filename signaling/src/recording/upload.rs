//! Uploading exported recordings (`[recording] upload`) through the `object_store` crate:
//! `s3://bucket/prefix` for S3 and S3-compatible storage (MinIO, R2, ...), with credentials,
//! region and endpoint from the environment as `AmazonS3Builder::from_env` reads them
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, ...), so no
//! secret sits in the config file; or `file:///path` for a directory (a mounted share).
//!
//! Files are streamed in parts (object_store's `BufWriter` switches to a multipart upload for
//! large ones), so a long class's video never sits whole in memory.

use std::path::Path;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use tokio::io::AsyncWriteExt;

/// Where exported recordings go, each under `<prefix>/<recording id>/`.
pub struct Uploader {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
}

impl Uploader {
    /// The store `url` names (`s3://bucket/prefix` or `file:///absolute/path`, created if
    /// missing).
    pub fn new(url: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match parsed.scheme() {
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| format!("{url:?}: no bucket"))?;
                let store = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| format!("{url:?}: {e}"))?;
                let prefix = ObjectPath::parse(parsed.path().trim_matches('/'))
                    .map_err(|e| format!("{url:?}: {e}"))?;
                (Arc::new(store), prefix)
            }
            "file" => {
                let root = parsed
                    .to_file_path()
                    .map_err(|()| format!("{url:?}: not an absolute local path"))?;
                std::fs::create_dir_all(&root).map_err(|e| format!("{url:?}: {e}"))?;
                let store =
                    LocalFileSystem::new_with_prefix(&root).map_err(|e| format!("{url:?}: {e}"))?;
                (Arc::new(store), ObjectPath::default())
            }
            other => return Err(format!("{url:?}: {other}:// is not supported (s3 or file)")),
        };
        Ok(Self {
            store,
            prefix,
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    /// Uploads `files` (names in `dir`) under `<prefix>/<id>/`; returns where they went.
    pub async fn upload(&self, dir: &Path, id: &str, files: &[String]) -> Result<String, String> {
        let base = self.prefix.child(id);
        for file in files {
            let path = dir.join(file);
            let mut source = tokio::fs::File::open(&path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mut sink = BufWriter::new(Arc::clone(&self.store), base.child(file.as_str()));
            let copied = async {
                tokio::io::copy(&mut source, &mut sink).await?;
                sink.shutdown().await
            };
            if let Err(e) = copied.await {
                let _ = sink.abort().await;
                return Err(format!("{file}: {e}"));
            }
        }
        Ok(format!("{}/{id}", self.url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_s3_and_file_urls_are_stores() {
        assert!(Uploader::new("ftp://host/x").is_err());
        assert!(Uploader::new("s3:///prefix").is_err());
        assert!(Uploader::new("not a url").is_err());
    }

    #[tokio::test]
    async fn files_are_copied_to_a_local_file_system_store() {
        let base = std::env::temp_dir().join(format!("aula-upload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (dir, target) = (base.join("RC_aaaaaaaaaaaa"), base.join("bucket"));
        std::fs::create_dir_all(&dir).unwrap();
        let big: Vec<u8> = (0..20_000_000u32).map(|i| i as u8).collect(); // several parts
        std::fs::write(dir.join("a.webm"), &big).unwrap();
        std::fs::write(dir.join("manifest.json"), b"{}").unwrap();
        let url = format!("file://{}", target.display());
        let uploader = Uploader::new(&url).unwrap();
        let files = ["a.webm".to_owned(), "manifest.json".to_owned()];
        let at = uploader
            .upload(&dir, "RC_aaaaaaaaaaaa", &files)
            .await
            .unwrap();
        let copied = std::fs::read(target.join("RC_aaaaaaaaaaaa/a.webm")).unwrap();
        let manifest = std::fs::read(target.join("RC_aaaaaaaaaaaa/manifest.json")).unwrap();
        let missing = uploader
            .upload(&dir, "RC_aaaaaaaaaaaa", &["gone.ogg".to_owned()])
            .await;
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(at, format!("{url}/RC_aaaaaaaaaaaa"));
        assert!(copied == big, "the big file is copied byte for byte");
        assert_eq!(manifest, b"{}");
        assert!(missing.is_err());
    }
}
