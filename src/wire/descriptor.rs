//! Naming a function: the PATH descriptor of an exchange, and a function's
//! signature in the Arrow Flight UDF convention (`GetFlightInfo`): the
//! argument fields followed by the result field, and `total_records` the
//! number of arguments, as RisingWave's and Databend's UDF servers use it.

use std::sync::Arc;

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightDescriptor, FlightInfo};
use datafusion::arrow::datatypes::{FieldRef, Schema};
use datafusion::arrow::error::ArrowError;

/// The schema-metadata key in which Databend's UDF servers (`databend-udf`)
/// give a function's number of arguments (their `total_records` counts the
/// result too).
pub const DATABEND_INPUT_COUNT_KEY: &str = "x-databend-udf-input-count";

/// The descriptor that names `function` in the first message of an exchange.
pub fn function_descriptor(function: &str) -> FlightDescriptor {
    FlightDescriptor::new_path(vec![function.to_string()])
}

/// The function a descriptor names, or why it names none.
pub fn function_of(descriptor: &FlightDescriptor) -> Result<&str, String> {
    if descriptor.r#type() != DescriptorType::Path {
        return Err(
            "the descriptor must be of type PATH with one element, the function's name".to_string(),
        );
    }
    match descriptor.path.as_slice() {
        [name] if !name.is_empty() => Ok(name),
        path => Err(format!(
            "the descriptor path must be one element, the function's name; got {path:?}"
        )),
    }
}

/// A function's signature as instances describe it: argument fields and the
/// result field.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSignature {
    /// The function's name.
    pub name: String,
    /// One field per argument, in order.
    pub arguments: Vec<FieldRef>,
    /// The result field.
    pub result: FieldRef,
}

/// Describes a function in the Arrow Flight UDF convention.
pub fn function_info(signature: &FunctionSignature) -> Result<FlightInfo, ArrowError> {
    let mut fields: Vec<FieldRef> = signature.arguments.clone();
    fields.push(Arc::clone(&signature.result));
    let schema = Schema::new(fields);
    let arguments = i64::try_from(signature.arguments.len()).unwrap_or(i64::MAX);
    Ok(FlightInfo::new()
        .try_with_schema(&schema)?
        .with_descriptor(function_descriptor(&signature.name))
        .with_total_records(arguments))
}

/// Reads a function's signature back from a [`FlightInfo`].
pub fn signature_of(info: FlightInfo) -> Result<FunctionSignature, ArrowError> {
    let name = info
        .flight_descriptor
        .as_ref()
        .and_then(|d| function_of(d).ok().map(str::to_string))
        .ok_or_else(|| ArrowError::InvalidArgumentError("FlightInfo names no function".into()))?;
    let total_records = info.total_records;
    let schema = info.try_decode_schema()?;
    // Databend's servers count every field in total_records and the
    // arguments in a schema-metadata entry
    let databend = schema
        .metadata()
        .get(DATABEND_INPUT_COUNT_KEY)
        .map(|count| (count.as_str(), count.parse::<usize>().ok()));
    let arguments = match databend {
        Some((_, Some(count))) => count,
        Some((count, None)) => {
            return Err(ArrowError::InvalidArgumentError(format!(
                "FlightInfo of '{name}' has {DATABEND_INPUT_COUNT_KEY} '{count}', not a number of arguments"
            )));
        }
        None => usize::try_from(total_records).map_err(|_| {
            ArrowError::InvalidArgumentError(format!(
                "FlightInfo of '{name}' has total_records {total_records}, not a number of arguments"
            ))
        })?,
    };
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    if fields.len() != arguments + 1 {
        return Err(ArrowError::InvalidArgumentError(format!(
            "FlightInfo of '{name}' has {} fields for {arguments} arguments; expected arguments then one result",
            fields.len()
        )));
    }
    let result = fields.pop().ok_or_else(|| {
        ArrowError::InvalidArgumentError(format!("FlightInfo of '{name}' has no result field"))
    })?;
    Ok(FunctionSignature {
        name,
        arguments: fields,
        result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};

    #[test]
    fn descriptor_names_one_function() {
        assert_eq!(function_of(&function_descriptor("upper")).unwrap(), "upper");
        let two = FlightDescriptor::new_path(vec!["a".into(), "b".into()]);
        assert!(function_of(&two).unwrap_err().contains("one element"));
        let cmd = FlightDescriptor::new_cmd(b"upper".to_vec());
        assert!(function_of(&cmd).unwrap_err().contains("PATH"));
    }

    #[test]
    fn function_info_round_trips() {
        let signature = FunctionSignature {
            name: "f".into(),
            arguments: vec![
                Arc::new(Field::new("a", DataType::Utf8, true)),
                Arc::new(Field::new("b", DataType::Int64, true)),
            ],
            result: Arc::new(Field::new("f", DataType::Float32, true)),
        };
        let info = function_info(&signature).unwrap();
        assert_eq!(info.total_records, 2);
        assert_eq!(signature_of(info).unwrap(), signature);
        // Databend's way: total_records counts every field, the metadata the arguments
        let fields: Vec<FieldRef> = signature
            .arguments
            .iter()
            .chain([&signature.result])
            .cloned()
            .collect();
        let schema = Schema::new(fields)
            .with_metadata([(DATABEND_INPUT_COUNT_KEY.to_string(), "2".to_string())].into());
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .unwrap()
            .with_descriptor(function_descriptor("f"))
            .with_total_records(3);
        assert_eq!(signature_of(info).unwrap(), signature);
    }
}
