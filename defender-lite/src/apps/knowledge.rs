//! The app documents of an `apps` feed, loaded and checked (`Knowledge`).

use std::path::{Path, PathBuf};

use relay::bundle::AppSpec;

/// Largest app document read.
pub(super) const MAX_DOCUMENT_BYTES: u64 = 1 << 20;
/// Most app documents loaded.
pub(super) const MAX_DOCUMENTS: usize = 10_000;

/// The app documents of an `apps` feed, parsed and checked.
#[derive(Debug, Clone)]
pub struct Knowledge {
    pub(super) apps: Vec<AppSpec>,
    pub(super) source: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no app documents (*.json) here, nor in apps/ or feeds/apps/ below it")]
    NoDocuments { path: PathBuf },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: more than {limit} app documents")]
    TooMany { path: PathBuf, limit: usize },
}

impl Knowledge {
    /// Documents already parsed and checked (an applied bundle's index); `source` is
    /// where they came from, for reports.
    pub fn from_specs(mut apps: Vec<AppSpec>, source: PathBuf) -> Knowledge {
        apps.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Knowledge { apps, source }
    }

    /// Loads the app documents from a directory: an `apps` feed directory of `<id>.json`
    /// files, a bundle's `feeds/` directory (its `apps/` is read) or an unpacked bundle
    /// (its `feeds/apps/`). Each document is parsed with the feed's schema and checked
    /// (`AppSpec::check`, id equal to the file stem).
    pub fn load_dir(path: &Path) -> Result<Knowledge, KnowledgeError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| KnowledgeError::Io { path, source }
        };
        let dir = [path.join("feeds/apps"), path.join("apps"), path.to_owned()]
            .into_iter()
            .find(|d| d.is_dir())
            .ok_or_else(|| KnowledgeError::NoDocuments {
                path: path.to_owned(),
            })?;
        let mut documents = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let file = entry.path();
            if file.extension().is_some_and(|e| e == "json") && file.is_file() {
                documents.push(file);
            }
            if documents.len() > MAX_DOCUMENTS {
                return Err(KnowledgeError::TooMany {
                    path: dir,
                    limit: MAX_DOCUMENTS,
                });
            }
        }
        if documents.is_empty() {
            return Err(KnowledgeError::NoDocuments { path: dir });
        }
        documents.sort();
        let mut apps = Vec::with_capacity(documents.len());
        for file in documents {
            let invalid = |reason: String| KnowledgeError::Invalid {
                path: file.clone(),
                reason,
            };
            let size = std::fs::metadata(&file).map_err(io(&file))?.len();
            if size > MAX_DOCUMENT_BYTES {
                return Err(invalid(format!(
                    "{size} bytes, over the {MAX_DOCUMENT_BYTES}-byte cap for an app document"
                )));
            }
            let bytes = std::fs::read(&file).map_err(io(&file))?;
            let app: AppSpec =
                serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if app.id.as_str() != stem {
                return Err(invalid(format!(
                    "app id {:?} must equal the file name {stem:?}",
                    app.id.as_str()
                )));
            }
            app.check().map_err(invalid)?;
            apps.push(app);
        }
        Ok(Knowledge { apps, source: dir })
    }

    /// Knowledge from documents already parsed (each is checked).
    pub fn from_apps(apps: Vec<AppSpec>, source: PathBuf) -> Result<Knowledge, String> {
        for app in &apps {
            app.check()?;
        }
        Ok(Knowledge { apps, source })
    }

    pub fn apps(&self) -> &[AppSpec] {
        &self.apps
    }

    /// Where the documents were read from.
    pub fn source(&self) -> &Path {
        &self.source
    }
}
