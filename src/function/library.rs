//! The functions an rpcop binary can host, by name.
//!
//! A [`FunctionLibrary`] maps names to [`HostedFunction`]s: any DataFusion
//! [`ScalarUDF`] — the built-ins, a user's own — with a *loader* that an
//! instance calls once when it starts (the "model load").

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;

use super::loaded::LoadedFunction;
use crate::error::FunctionError;

/// Builds a function for one instance; may be slow (a model load).
pub type Loader = Arc<dyn Fn(&LoadContext) -> Result<Arc<ScalarUDF>, String> + Send + Sync>;

/// What a [`Loader`] is told of the instance it loads for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadContext {
    /// The instance's threads (the service's `threads`): the requests it
    /// evaluates at once, and the compute threads a model may use.
    pub threads: usize,
    /// The CUDA device (an ordinal of those this process sees) the instance
    /// was given with `gpus`, if any.
    pub cuda_device: Option<usize>,
}

impl LoadContext {
    /// An instance of `threads` threads, without a GPU.
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            cuda_device: None,
        }
    }

    /// The same, on CUDA device `device`.
    pub fn with_cuda_device(self, device: Option<usize>) -> Self {
        Self {
            cuda_device: device,
            ..self
        }
    }
}

/// A function a service can host: its name and its loader.
#[derive(Clone)]
pub struct HostedFunction {
    name: String,
    loader: Loader,
}

impl fmt::Debug for HostedFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostedFunction")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl HostedFunction {
    /// A function whose every instance shares `udf` (no start-up cost).
    pub fn shared(udf: Arc<ScalarUDF>) -> Self {
        Self {
            name: udf.name().to_string(),
            loader: Arc::new(move |_| Ok(Arc::clone(&udf))),
        }
    }

    /// A function that each instance builds with `loader` when it starts.
    pub fn with_loader(name: impl Into<String>, loader: Loader) -> Self {
        Self {
            name: name.into(),
            loader,
        }
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the loader (once per instance).
    pub(crate) fn load(&self, context: &LoadContext) -> Result<LoadedFunction, FunctionError> {
        let udf = (self.loader)(context).map_err(|reason| FunctionError::Load {
            function: self.name.clone(),
            reason,
        })?;
        Ok(LoadedFunction::new(udf))
    }
}

/// The set of functions an rpcop binary can host, by name.
///
/// [`FunctionLibrary::default`] holds DataFusion's built-in scalar functions
/// (the `rpcop` binary adds the demo models, [`crate::demo::library`], and
/// the real ones, `FunctionLibrary::with_models`);
/// `rpcop serve --function NAME` looks names up here, and a user's own
/// binary adds its functions with [`FunctionLibrary::with`] or
/// [`FunctionLibrary::with_udf`].
///
/// ```
/// use std::sync::Arc;
/// use datafusion::logical_expr::ScalarUDF;
/// use rpcop::{FunctionLibrary, HostedFunction};
///
/// # fn my_model() -> ScalarUDF { datafusion::functions::string::upper().as_ref().clone() }
/// // a model loaded once per instance when the instance starts
/// let model = HostedFunction::with_loader("my_model", Arc::new(|_| Ok(Arc::new(my_model()))));
/// let library = FunctionLibrary::default().with(model);
/// assert!(library.get("my_model").is_some() && library.get("upper").is_some());
/// let hosted = library.select(&["my_model".to_string()])?;
/// # Ok::<(), rpcop::FunctionError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FunctionLibrary {
    functions: BTreeMap<String, HostedFunction>,
}

impl Default for FunctionLibrary {
    /// DataFusion's built-in scalar functions.
    fn default() -> Self {
        Self::empty().with_builtins()
    }
}

impl FunctionLibrary {
    /// A library with no function.
    pub fn empty() -> Self {
        Self {
            functions: BTreeMap::new(),
        }
    }

    /// Adds DataFusion's built-in scalar functions (and their aliases).
    pub fn with_builtins(self) -> Self {
        let mut library = self;
        let builtins = datafusion::functions::all_default_functions()
            .into_iter()
            .chain(datafusion::functions_nested::all_default_nested_functions());
        for udf in builtins {
            for alias in udf.aliases() {
                let hosted = HostedFunction {
                    name: alias.clone(),
                    ..HostedFunction::shared(Arc::clone(&udf))
                };
                library.functions.insert(alias.clone(), hosted);
            }
            library = library.with(HostedFunction::shared(udf));
        }
        library
    }

    /// Adds (or replaces) a function.
    pub fn with(mut self, function: HostedFunction) -> Self {
        self.functions.insert(function.name.clone(), function);
        self
    }

    /// Adds (or replaces) several functions.
    pub fn with_functions(self, functions: impl IntoIterator<Item = HostedFunction>) -> Self {
        functions.into_iter().fold(self, Self::with)
    }

    /// Adds a user's UDF, shared by every instance.
    pub fn with_udf(self, udf: ScalarUDF) -> Self {
        self.with(HostedFunction::shared(Arc::new(udf)))
    }

    /// The function called `name` (case-sensitive, as DataFusion names them).
    pub fn get(&self, name: &str) -> Option<&HostedFunction> {
        self.functions.get(name)
    }

    /// Looks up several functions, failing on the first unknown one with an
    /// error that says how to find the known ones.
    pub fn select(&self, names: &[String]) -> Result<Vec<HostedFunction>, FunctionError> {
        names
            .iter()
            .map(|name| {
                self.get(name)
                    .cloned()
                    .ok_or_else(|| FunctionError::Unknown {
                        function: name.clone(),
                        known: self.functions.len(),
                    })
            })
            .collect()
    }

    /// The names of every function, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(String::as_str)
    }
}
