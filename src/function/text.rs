//! The text argument of a function, whatever its string type: the
//! signature that takes one, and its values.

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{ScalarFunctionArgs, Signature, TypeSignature, Volatility};

/// One text argument: `Utf8`, `LargeUtf8` or `Utf8View`; immutable.
pub(crate) fn text_signature() -> Signature {
    Signature::one_of(
        vec![
            TypeSignature::Exact(vec![DataType::Utf8]),
            TypeSignature::Exact(vec![DataType::LargeUtf8]),
            TypeSignature::Exact(vec![DataType::Utf8View]),
        ],
        Volatility::Immutable,
    )
}

/// The text argument as an iterator of optional strings, whatever its string type.
pub(crate) fn texts(array: &ArrayRef) -> Result<Box<dyn Iterator<Item = Option<&str>> + '_>> {
    Ok(match array.data_type() {
        DataType::Utf8 => Box::new(array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => Box::new(array.as_string::<i64>().iter()),
        DataType::Utf8View => Box::new(array.as_string_view().iter()),
        other => return exec_err!("expected a text argument, got {other}"),
    })
}

/// The first argument as an array of the call's rows.
pub(crate) fn first_arg(args: &ScalarFunctionArgs) -> Result<ArrayRef> {
    match args.args.first() {
        Some(value) => value.to_array(args.number_rows),
        None => exec_err!("missing the text argument"),
    }
}
