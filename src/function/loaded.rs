//! A function as one instance runs it: evaluated on argument batches exactly
//! as DataFusion would evaluate it in-process.
//!
//! Arguments are coerced to the function's signature, constant arguments
//! (marked on the wire) are passed as scalars, and the result is checked to
//! have one value per row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, new_empty_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Field, FieldRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF};

use crate::error::FunctionError;
use crate::wire::{FunctionSignature, SCALAR_ARGUMENT_KEY, is_scalar_argument};

/// A function as one instance runs it.
#[derive(Debug, Clone)]
pub(crate) struct LoadedFunction {
    udf: Arc<ScalarUDF>,
}

/// One request's arguments, coerced to the function's signature.
struct Arguments {
    values: Vec<ColumnarValue>,
    scalars: Vec<Option<ScalarValue>>,
    fields: Vec<FieldRef>,
}

impl LoadedFunction {
    pub(crate) fn new(udf: Arc<ScalarUDF>) -> Self {
        Self { udf }
    }

    /// The function's name.
    pub(crate) fn name(&self) -> &str {
        self.udf.name()
    }

    /// The signature instances describe in `GetFlightInfo`: the first of the
    /// argument types the function's signature lists, and the result for them.
    /// `None` when the signature lists no concrete example.
    pub(crate) fn describe(&self) -> Option<FunctionSignature> {
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
    pub(crate) fn invoke(
        &self,
        arguments: &RecordBatch,
        config: &Arc<ConfigOptions>,
    ) -> Result<ArrayRef, FunctionError> {
        let rows = arguments.num_rows();
        // a function whose behaviour follows the session's options
        // (`to_timestamp`'s time zone) is rebuilt for the caller's, as
        // DataFusion rebuilds it when a session's options change
        let updated = self.udf.inner().with_updated_config(config);
        let udf = updated.as_ref().unwrap_or(self.udf.as_ref());
        let Arguments {
            values,
            scalars,
            fields,
        } = self.coerce(arguments)?;
        let scalar_refs: Vec<Option<&ScalarValue>> = scalars.iter().map(Option::as_ref).collect();
        let return_field = udf
            .return_field_from_args(ReturnFieldArgs {
                arg_fields: &fields,
                scalar_arguments: &scalar_refs,
            })
            .map_err(|e| self.failed(e.strip_backtrace()))?;
        if rows == 0 {
            // nothing to evaluate; a zero-row constant column carries no
            // value, so the function is not asked to read one
            return Ok(new_empty_array(return_field.data_type()));
        }
        let all_constants = values.iter().all(|v| matches!(v, ColumnarValue::Scalar(_)));
        let result = udf
            .invoke_with_args(ScalarFunctionArgs {
                args: values,
                arg_fields: fields,
                number_rows: rows,
                return_field,
                config_options: Arc::clone(config),
            })
            .map_err(|e| self.failed_with(&e))?;
        // a function of constants may answer one value for all rows (as
        // DataFusion's own evaluation allows)
        let result = match result {
            ColumnarValue::Array(array) if all_constants && array.len() == 1 && rows != 1 => {
                ScalarValue::try_from_array(&array, 0)
                    .and_then(|value| value.to_array_of_size(rows))
            }
            result => result.into_array(rows),
        }
        .map_err(|e| self.failed(e.strip_backtrace()))?;
        if result.len() != rows {
            return Err(self.failed(format!("returned {} values for {rows} rows", result.len())));
        }
        Ok(result)
    }

    /// The arguments cast to the types the function's signature coerces
    /// them to, constants as scalars.
    fn coerce(&self, arguments: &RecordBatch) -> Result<Arguments, FunctionError> {
        let given: Vec<FieldRef> = arguments.schema().fields().iter().cloned().collect();
        let coerced =
            fields_with_udf(&given, self.udf.as_ref()).map_err(|e| FunctionError::Arguments {
                function: self.name().to_string(),
                given: given.iter().map(|f| f.data_type().to_string()).collect(),
                reason: e.strip_backtrace(),
            })?;
        let mut scalars = Vec::with_capacity(given.len());
        let mut values = Vec::with_capacity(given.len());
        for ((column, field), target) in arguments.columns().iter().zip(&given).zip(&coerced) {
            let column = if column.data_type() == target.data_type() {
                Arc::clone(column)
            } else {
                cast(column, target.data_type()).map_err(|e| {
                    self.failed(format!(
                        "cannot cast argument '{}' from {} to {}: {e}",
                        field.name(),
                        column.data_type(),
                        target.data_type()
                    ))
                })?
            };
            if is_scalar_argument(field) && !column.is_empty() {
                let scalar = ScalarValue::try_from_array(&column, 0)
                    .map_err(|e| self.failed(e.strip_backtrace()))?;
                scalars.push(Some(scalar.clone()));
                values.push(ColumnarValue::Scalar(scalar));
            } else {
                scalars.push(None);
                values.push(ColumnarValue::Array(column));
            }
        }
        // the fields as the caller planned them, without rpcop's own mark
        let fields = coerced
            .iter()
            .map(|f| {
                let mut metadata = f.metadata().clone();
                metadata.remove(SCALAR_ARGUMENT_KEY);
                Arc::new(f.as_ref().clone().with_metadata(metadata))
            })
            .collect();
        Ok(Arguments {
            values,
            scalars,
            fields,
        })
    }

    /// The function's own error: transient if it says the moment is to
    /// blame (I/O, an external system, exhausted resources), an answer for
    /// these rows otherwise.
    fn failed_with(&self, error: &DataFusionError) -> FunctionError {
        let reason = error.strip_backtrace();
        match error.find_root() {
            DataFusionError::IoError(_)
            | DataFusionError::External(_)
            | DataFusionError::ObjectStore(_)
            | DataFusionError::ResourcesExhausted(_) => FunctionError::Transient {
                function: self.name().to_string(),
                reason,
            },
            _ => self.failed(reason),
        }
    }

    fn failed(&self, reason: String) -> FunctionError {
        FunctionError::Invoke {
            function: self.name().to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::FunctionLibrary;
    use datafusion::arrow::array::{DictionaryArray, Int32Array, StringArray};
    use datafusion::arrow::datatypes::Int32Type;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn loaded(name: &str) -> LoadedFunction {
        crate::demo::library()
            .get(name)
            .unwrap()
            .load(&crate::function::LoadContext::new(1))
            .unwrap()
    }

    #[test]
    fn a_function_of_constants_answers_every_row() {
        // abs of a constant answers one value; the request has four rows
        let field = crate::wire::scalar_argument(&Field::new(
            "a",
            datafusion::arrow::datatypes::DataType::Int32,
            true,
        ));
        let b = RecordBatch::try_new(
            Arc::new(datafusion::arrow::datatypes::Schema::new(vec![field])),
            vec![Arc::new(Int32Array::from(vec![-3; 4]))],
        )
        .unwrap();
        let out = loaded("abs").invoke(&b, &Arc::default()).unwrap();
        let expected: ArrayRef = Arc::new(Int32Array::from(vec![3; 4]));
        assert_eq!(&out, &expected);
    }

    #[test]
    fn invoke_coerces_dictionary_input() {
        let f = loaded("upper");
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
        let f = loaded("sha256");
        let b = batch(vec![
            ("a", Arc::new(StringArray::from(vec!["x"]))),
            ("b", Arc::new(StringArray::from(vec!["y"]))),
        ]);
        let err = f.invoke(&b, &Arc::default()).unwrap_err().to_string();
        assert!(err.contains("sha256"), "{err}");
    }

    #[test]
    fn describe_gives_arguments_then_result() {
        let sig = loaded("embed").describe().unwrap();
        assert_eq!(sig.arguments.len(), 1);
        assert_eq!(sig.result.name(), "embed");
    }

    #[test]
    fn the_library_names_its_unknowns() {
        let library = FunctionLibrary::default();
        for name in [
            "upper",
            "sha256",
            "character_length",
            "char_length",
            "array_length",
        ] {
            assert!(library.get(name).is_some(), "{name}");
        }
        let err = library
            .select(&["upper".into(), "nope".into()])
            .unwrap_err();
        assert!(err.to_string().contains("'nope'"), "{err}");
    }
}
