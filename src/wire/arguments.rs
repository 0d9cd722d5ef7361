//! Constant arguments: a column of one repeated value, marked so that the
//! instance passes the function a scalar, as DataFusion does for a literal.

use datafusion::arrow::datatypes::Field;

use super::constants::SCALAR_ARGUMENT_KEY;

/// Marks an argument field as a constant (see [`SCALAR_ARGUMENT_KEY`]).
pub fn scalar_argument(field: &Field) -> Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(SCALAR_ARGUMENT_KEY.to_string(), "true".to_string());
    field.clone().with_metadata(metadata)
}

/// Is this argument field marked as a constant?
pub fn is_scalar_argument(field: &Field) -> bool {
    field
        .metadata()
        .get(SCALAR_ARGUMENT_KEY)
        .is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;

    #[test]
    fn the_mark_round_trips() {
        let field = Field::new("a", DataType::Int64, true);
        assert!(!is_scalar_argument(&field));
        assert!(is_scalar_argument(&scalar_argument(&field)));
    }
}
