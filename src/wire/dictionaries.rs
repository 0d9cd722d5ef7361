//! Dictionaries of dictionaries, which Arrow IPC cannot carry.
//!
//! DataFusion makes them (`arrow_cast(x, 'Dictionary(Int32,
//! Dictionary(UInt32, Utf8))')`), and string functions keep the encoding of
//! their argument; but an IPC stream has one dictionary per field, so the
//! writer refuses a dictionary whose values are one. Such a column travels
//! with each dictionary's values unpacked into the outer dictionary
//! (`Dictionary(Int32, Utf8)`): the same values, one level of encoding
//! fewer, its field marked with its own type ([`ORIGINAL_TYPE_KEY`]). The
//! receiver casts a marked column back to that type ([`received`]), so a
//! function sees the argument DataFusion would give it, and the caller the
//! result the function gave.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Fields, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::constants::ORIGINAL_TYPE_KEY;

/// `data_type` with every dictionary of dictionaries unpacked to one
/// dictionary, or `None` if it holds none.
pub(crate) fn without_nested_dictionaries(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::Dictionary(key, values) => {
            let mut inner = values.as_ref();
            let mut nested = false;
            while let DataType::Dictionary(_, deeper) = inner {
                inner = deeper;
                nested = true;
            }
            let flat = without_nested_dictionaries(inner);
            (nested || flat.is_some()).then(|| {
                DataType::Dictionary(key.clone(), Box::new(flat.unwrap_or_else(|| inner.clone())))
            })
        }
        DataType::List(field) => flat_field(field).map(DataType::List),
        DataType::LargeList(field) => flat_field(field).map(DataType::LargeList),
        DataType::ListView(field) => flat_field(field).map(DataType::ListView),
        DataType::LargeListView(field) => flat_field(field).map(DataType::LargeListView),
        DataType::FixedSizeList(field, size) => {
            flat_field(field).map(|f| DataType::FixedSizeList(f, *size))
        }
        DataType::Map(field, sorted) => flat_field(field).map(|f| DataType::Map(f, *sorted)),
        DataType::Struct(fields) => flat_fields(fields).map(DataType::Struct),
        _ => None,
    }
}

fn flat_field(field: &FieldRef) -> Option<FieldRef> {
    without_nested_dictionaries(field.data_type())
        .map(|t| Arc::new(field.as_ref().clone().with_data_type(t)))
}

fn flat_fields(fields: &Fields) -> Option<Fields> {
    let flat: Vec<Option<FieldRef>> = fields.iter().map(flat_field).collect();
    flat.iter().any(Option::is_some).then(|| {
        fields
            .iter()
            .zip(flat)
            .map(|(field, flat)| flat.unwrap_or_else(|| Arc::clone(field)))
            .collect()
    })
}

/// `batch` with its dictionaries of dictionaries unpacked (see the module
/// documentation), or `None` if it holds none.
pub(crate) fn sendable(batch: &RecordBatch) -> Result<Option<RecordBatch>, ArrowError> {
    let schema = batch.schema_ref();
    let Some(flat) = flat_fields(schema.fields()) else {
        return Ok(None);
    };
    // each unpacked field names the type to cast back to, when its text
    // reads back as the same type
    let fields: Fields = schema
        .fields()
        .iter()
        .zip(flat.iter())
        .map(|(field, flat)| {
            let original = field.data_type();
            if flat.data_type() == original
                || DataType::from_str(&original.to_string()).ok().as_ref() != Some(original)
            {
                return Arc::clone(flat);
            }
            let mut metadata = flat.metadata().clone();
            metadata.insert(ORIGINAL_TYPE_KEY.to_string(), original.to_string());
            Arc::new(flat.as_ref().clone().with_metadata(metadata))
        })
        .collect();
    let columns = batch
        .columns()
        .iter()
        .zip(fields.iter())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    with_columns(batch, fields, columns).map(Some)
}

/// `batch` with each column [`sendable`] marked cast back to its type, or
/// `None` if none is marked.
pub(crate) fn received(batch: &RecordBatch) -> Result<Option<RecordBatch>, ArrowError> {
    let schema = batch.schema_ref();
    let marked = |field: &FieldRef| field.metadata().contains_key(ORIGINAL_TYPE_KEY);
    if !schema.fields().iter().any(marked) {
        return Ok(None);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let mut metadata: HashMap<String, String> = field.metadata().clone();
        let Some(original) = metadata.remove(ORIGINAL_TYPE_KEY) else {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(column));
            continue;
        };
        let original = DataType::from_str(&original).map_err(|e| {
            ArrowError::InvalidArgumentError(format!(
                "field '{}' names its type before IPC as '{original}', which is not a type: {e}",
                field.name()
            ))
        })?;
        columns.push(cast(column, &original)?);
        fields.push(Arc::new(
            field
                .as_ref()
                .clone()
                .with_data_type(original)
                .with_metadata(metadata),
        ));
    }
    with_columns(batch, fields.into(), columns).map(Some)
}

fn with_columns(
    batch: &RecordBatch,
    fields: Fields,
    columns: Vec<ArrayRef>,
) -> Result<RecordBatch, ArrowError> {
    let schema = Schema::new_with_metadata(fields, batch.schema_ref().metadata().clone());
    RecordBatch::try_new_with_options(
        Arc::new(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, StringArray};
    use datafusion::arrow::datatypes::Field;

    fn dict(key: DataType, values: DataType) -> DataType {
        DataType::Dictionary(Box::new(key), Box::new(values))
    }

    #[test]
    fn nested_dictionaries_are_unpacked_wherever_they_are() {
        let nested = dict(DataType::Int32, dict(DataType::UInt32, DataType::Utf8));
        let flat = dict(DataType::Int32, DataType::Utf8);
        assert_eq!(without_nested_dictionaries(&nested), Some(flat.clone()));
        assert_eq!(without_nested_dictionaries(&flat), None);
        assert_eq!(without_nested_dictionaries(&DataType::Utf8), None);
        let list = DataType::new_list(nested.clone(), true);
        assert_eq!(
            without_nested_dictionaries(&list),
            Some(DataType::new_list(flat.clone(), true))
        );
        let fields = Fields::from(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", nested, true),
        ]);
        let Some(DataType::Struct(flat_fields)) =
            without_nested_dictionaries(&DataType::Struct(fields))
        else {
            panic!("a struct stays a struct");
        };
        assert_eq!(flat_fields[0].data_type(), &DataType::Int64);
        assert_eq!(flat_fields[1].data_type(), &flat);
    }

    #[test]
    fn a_batch_keeps_its_values_and_metadata() {
        let strings: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None, Some("a")]));
        let nested_type = dict(DataType::Int32, dict(DataType::UInt32, DataType::Utf8));
        let inner = cast(&strings, &dict(DataType::UInt32, DataType::Utf8)).unwrap();
        let nested = cast(&inner, &nested_type).unwrap();
        let schema = Schema::new(vec![Field::new("d", nested_type, true)])
            .with_metadata(HashMap::from([("k".to_string(), "v".to_string())]));
        let batch = RecordBatch::try_new(Arc::new(schema), vec![nested]).unwrap();
        let sent = sendable(&batch).unwrap().unwrap();
        assert_eq!(
            sent.schema().field(0).data_type(),
            &dict(DataType::Int32, DataType::Utf8)
        );
        assert_eq!(sent.schema().metadata()["k"], "v");
        let values = cast(sent.column(0), &DataType::Utf8).unwrap();
        assert_eq!(values.as_ref(), strings.as_ref());
        assert_eq!(values.null_count(), 1);
        // the receiver gets the batch that was sent
        let back = received(&sent).unwrap().unwrap();
        assert_eq!(back, batch);
        assert!(received(&batch).unwrap().is_none());
        let plain = RecordBatch::try_from_iter([("s", strings)]).unwrap();
        assert!(sendable(&plain).unwrap().is_none());
    }
}
