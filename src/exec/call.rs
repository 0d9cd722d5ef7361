//! One call a proxy operator sends per request: the function, its
//! arguments (input columns or constants) and its result field.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, FieldRef, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{Result, ScalarValue};

use crate::wire::scalar_argument;

/// An argument of a call: a column of the input, or a constant.
#[derive(Debug, Clone)]
pub(crate) enum Argument {
    Column(usize, FieldRef),
    Constant(ScalarValue),
}

/// One call the operator sends per request.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) function: String,
    pub(crate) arguments: Vec<Argument>,
    pub(crate) result: FieldRef,
}

impl Call {
    /// The argument batch of this call for the rows of `request`.
    pub(crate) fn arguments(&self, request: &RecordBatch) -> Result<RecordBatch> {
        let rows = request.num_rows();
        let mut fields = Vec::with_capacity(self.arguments.len());
        let mut columns = Vec::with_capacity(self.arguments.len());
        for (i, argument) in self.arguments.iter().enumerate() {
            match argument {
                Argument::Column(index, field) => {
                    fields.push(Field::new(
                        format!("arg{i}"),
                        field.data_type().clone(),
                        true,
                    ));
                    columns.push(Arc::clone(request.column(*index)));
                }
                Argument::Constant(value) => {
                    let field = Field::new(format!("arg{i}"), value.data_type(), true);
                    fields.push(scalar_argument(&field));
                    columns.push(value.to_array_of_size(rows)?);
                }
            }
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arguments: Vec<String> = self
            .arguments
            .iter()
            .map(|a| match a {
                Argument::Column(index, field) => format!("{}@{index}", field.name()),
                Argument::Constant(value) => value.to_string(),
            })
            .collect();
        write!(f, "{}({})", self.function, arguments.join(", "))
    }
}
