//! The functions a service can host, and how an instance runs one.
//!
//! A [`FunctionLibrary`] maps names to [`HostedFunction`]s: any DataFusion
//! [`ScalarUDF`] — the built-ins, the demo models of [`crate::demo`], a user's
//! own — with a *loader* that an instance calls once when it starts (the
//! "model load"). A loaded function ([`LoadedFunction`]) evaluates argument
//! batches exactly as DataFusion would in-process: arguments are coerced to the
//! function's signature, constant arguments are passed as scalars, and the
//! result is checked to have one value per row.
//!
//! ```
//! use rpcop::FunctionLibrary;
//!
//! let library = FunctionLibrary::default();
//! assert!(library.get("upper").is_some());
//! assert!(library.get("embed").is_some());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, new_empty_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Field, FieldRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF};

use crate::error::FunctionError;
use crate::protocol::{FunctionSignature, is_scalar_argument};

/// Builds a function for one instance; may be slow (a model load).
pub type Loader = Arc<dyn Fn() -> Result<Arc<ScalarUDF>, String> + Send + Sync>;

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
            loader: Arc::new(move || Ok(Arc::clone(&udf))),
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
    pub fn load(&self) -> Result<LoadedFunction, FunctionError> {
        let udf = (self.loader)().map_err(|reason| FunctionError::Load {
            function: self.name.clone(),
            reason,
        })?;
        Ok(LoadedFunction { udf })
    }
}

/// The set of functions an rpcop binary can host, by name.
///
/// [`FunctionLibrary::default`] holds DataFusion's built-in scalar functions
/// and the demo models; `rpcop serve --function NAME` looks names up here, and
/// a user's own binary adds its functions with [`FunctionLibrary::with`].
#[derive(Debug, Clone)]
pub struct FunctionLibrary {
    functions: BTreeMap<String, HostedFunction>,
}

impl Default for FunctionLibrary {
    fn default() -> Self {
        let library = Self::empty().with_builtins();
        crate::demo::demo_functions()
            .into_iter()
            .fold(library, Self::with)
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

/// A function as one instance runs it.
#[derive(Debug, Clone)]
pub struct LoadedFunction {
    udf: Arc<ScalarUDF>,
}

impl LoadedFunction {
    /// The function's name.
    pub fn name(&self) -> &str {
        self.udf.name()
    }

    /// The DataFusion function it evaluates.
    pub fn udf(&self) -> Arc<ScalarUDF> {
        Arc::clone(&self.udf)
    }

    /// The signature instances describe in `GetFlightInfo`: the first of the
    /// argument types the function's signature lists, and the result for them.
    /// `None` when the signature lists no concrete example.
    pub fn describe(&self) -> Option<FunctionSignature> {
        let examples = self.udf.signature().type_signature.get_example_types();
        examples.into_iter().find_map(|types| {
            let arguments: Vec<FieldRef> = types
                .into_iter()
                .enumerate()
                .map(|(i, t)| Arc::new(Field::new(format!("arg{i}"), t, true)))
                .collect();
            let scalars = vec![None; arguments.len()];
            let result = self
                .udf
                .return_field_from_args(ReturnFieldArgs {
                    arg_fields: &arguments,
                    scalar_arguments: &scalars,
                })
                .ok()?;
            let result = Arc::new(result.as_ref().clone().with_name(self.name()));
            Some(FunctionSignature {
                name: self.name().to_string(),
                arguments,
                result,
            })
        })
    }

    /// Evaluates the function on one argument batch (one column per
    /// argument), returning one value per row.
    pub fn invoke(
        &self,
        arguments: &RecordBatch,
        config: &Arc<ConfigOptions>,
    ) -> Result<ArrayRef, FunctionError> {
        let name = self.name();
        let error = |reason: String| FunctionError::Invoke {
            function: name.to_string(),
            reason,
        };
        let rows = arguments.num_rows();
        let given: Vec<FieldRef> = arguments.schema().fields().iter().cloned().collect();
        let coerced =
            fields_with_udf(&given, self.udf.as_ref()).map_err(|e| FunctionError::Arguments {
                function: name.to_string(),
                given: given.iter().map(|f| f.data_type().to_string()).collect(),
                reason: e.strip_backtrace(),
            })?;
        let mut scalars: Vec<Option<ScalarValue>> = Vec::with_capacity(given.len());
        let mut args = Vec::with_capacity(given.len());
        for ((column, field), target) in arguments.columns().iter().zip(&given).zip(&coerced) {
            let column = if column.data_type() == target.data_type() {
                Arc::clone(column)
            } else {
                cast(column, target.data_type()).map_err(|e| {
                    error(format!(
                        "cannot cast argument '{}' from {} to {}: {e}",
                        field.name(),
                        column.data_type(),
                        target.data_type()
                    ))
                })?
            };
            if is_scalar_argument(field) && !column.is_empty() {
                let scalar = ScalarValue::try_from_array(&column, 0)
                    .map_err(|e| error(e.strip_backtrace()))?;
                scalars.push(Some(scalar.clone()));
                args.push(ColumnarValue::Scalar(scalar));
            } else {
                scalars.push(None);
                args.push(ColumnarValue::Array(column));
            }
        }
        let arg_fields: Vec<FieldRef> = coerced
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_metadata(Default::default())))
            .collect();
        let scalar_refs: Vec<Option<&ScalarValue>> = scalars.iter().map(Option::as_ref).collect();
        let return_field = self
            .udf
            .return_field_from_args(ReturnFieldArgs {
                arg_fields: &arg_fields,
                scalar_arguments: &scalar_refs,
            })
            .map_err(|e| error(e.strip_backtrace()))?;
        if rows == 0 {
            // nothing to evaluate; a zero-row constant column carries no
            // value, so the function is not asked to read one
            return Ok(new_empty_array(return_field.data_type()));
        }
        let result = self
            .udf
            .invoke_with_args(ScalarFunctionArgs {
                args,
                arg_fields,
                number_rows: rows,
                return_field,
                config_options: Arc::clone(config),
            })
            .map_err(|e| error(e.strip_backtrace()))?
            .into_array(rows)
            .map_err(|e| error(e.strip_backtrace()))?;
        if result.len() != rows {
            return Err(error(format!(
                "returned {} values for {rows} rows",
                result.len()
            )));
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{DictionaryArray, Int32Array, StringArray};
    use datafusion::arrow::datatypes::Int32Type;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn library_holds_builtins_aliases_and_demos() {
        let library = FunctionLibrary::default();
        for name in [
            "upper",
            "sha256",
            "character_length",
            "char_length",
            "array_length",
            "embed",
            "classify",
            "model_sim",
        ] {
            assert!(library.get(name).is_some(), "{name}");
        }
        let err = library
            .select(&["upper".into(), "nope".into()])
            .unwrap_err();
        assert!(err.to_string().contains("'nope'"), "{err}");
    }

    #[test]
    fn invoke_coerces_dictionary_input() {
        let f = FunctionLibrary::default()
            .get("upper")
            .unwrap()
            .load()
            .unwrap();
        let keys = Int32Array::from(vec![Some(0), None, Some(1)]);
        let dict = DictionaryArray::<Int32Type>::try_new(
            keys,
            Arc::new(StringArray::from(vec!["a", "b"])),
        )
        .unwrap();
        let out = f
            .invoke(&batch(vec![("s", Arc::new(dict))]), &Arc::default())
            .unwrap();
        let out = cast(&out, &datafusion::arrow::datatypes::DataType::Utf8).unwrap();
        let expected: ArrayRef = Arc::new(StringArray::from(vec![Some("A"), None, Some("B")]));
        assert_eq!(&out, &expected);
    }

    #[test]
    fn wrong_argument_types_name_the_function() {
        let f = FunctionLibrary::default()
            .get("sha256")
            .unwrap()
            .load()
            .unwrap();
        let b = batch(vec![
            ("a", Arc::new(StringArray::from(vec!["x"]))),
            ("b", Arc::new(StringArray::from(vec!["y"]))),
        ]);
        let err = f.invoke(&b, &Arc::default()).unwrap_err().to_string();
        assert!(err.contains("sha256"), "{err}");
    }

    #[test]
    fn describe_gives_arguments_then_result() {
        let f = FunctionLibrary::default()
            .get("embed")
            .unwrap()
            .load()
            .unwrap();
        let sig = f.describe().unwrap();
        assert_eq!(sig.arguments.len(), 1);
        assert_eq!(sig.result.name(), "embed");
    }
}
