//! One call a proxy operator sends per request: the function, its
//! arguments, the rows it is evaluated on, and its result field.
//!
//! Arguments are expressions over the operator's input; a literal goes out
//! as a constant (a column marked so the instance passes the function a
//! scalar, as DataFusion does). A call with a guard (a `CASE` branch, the
//! right side of `AND`) is evaluated only on the rows where the guard is
//! `1`: its arguments are computed on those rows only, only they are sent,
//! and the other rows' results are NULL.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int8Array, new_null_array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Field, FieldRef, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{Result, internal_err};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::utils::scatter;

use crate::wire::scalar_argument;

/// One call the operator sends per request.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) function: String,
    pub(crate) arguments: Vec<Arc<dyn PhysicalExpr>>,
    /// `1` on the rows the call is evaluated on; `None`: every row.
    pub(crate) guard: Option<Arc<dyn PhysicalExpr>>,
    pub(crate) result: FieldRef,
}

/// The rows of a request one call is evaluated on.
pub(crate) enum Rows {
    /// Every row.
    All,
    /// None: the result is all NULL and nothing is sent.
    None,
    /// Those where the mask is true: the request filtered to them.
    Some(BooleanArray, RecordBatch),
}

impl Call {
    /// The rows of `request` this call is evaluated on.
    pub(crate) fn rows(&self, request: &RecordBatch) -> Result<Rows> {
        let Some(guard) = &self.guard else {
            return Ok(Rows::All);
        };
        let flags = guard.evaluate(request)?.into_array(request.num_rows())?;
        let Some(flags) = flags.as_any().downcast_ref::<Int8Array>() else {
            return internal_err!("the guard of {self} is not Int8");
        };
        let mask: BooleanArray = flags.iter().map(|f| Some(f == Some(1))).collect();
        Ok(match mask.true_count() {
            0 => Rows::None,
            n if n == request.num_rows() => Rows::All,
            _ => {
                let selected = filter_record_batch(request, &mask)?;
                Rows::Some(mask, selected)
            }
        })
    }

    /// The argument batch of this call for the rows of `rows`.
    pub(crate) fn arguments(&self, rows: &RecordBatch) -> Result<RecordBatch> {
        let count = rows.num_rows();
        let mut fields = Vec::with_capacity(self.arguments.len());
        let mut columns = Vec::with_capacity(self.arguments.len());
        for (i, argument) in self.arguments.iter().enumerate() {
            let name = format!("arg{i}");
            match argument.evaluate(rows)? {
                ColumnarValue::Array(array) => {
                    fields.push(Field::new(name, array.data_type().clone(), true));
                    columns.push(array);
                }
                ColumnarValue::Scalar(value) => {
                    let field = Field::new(name, value.data_type(), true);
                    fields.push(scalar_argument(&field));
                    columns.push(value.to_array_of_size(count)?);
                }
            }
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(count)),
        )?)
    }

    /// The result column for a whole request, from the result of its
    /// evaluated rows.
    pub(crate) fn result_column(
        &self,
        rows: &Rows,
        request_rows: usize,
        result: ArrayRef,
    ) -> Result<ArrayRef> {
        Ok(match rows {
            Rows::All => result,
            Rows::None => new_null_array(self.result.data_type(), request_rows),
            Rows::Some(mask, _) => scatter(mask, result.as_ref())?,
        })
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arguments: Vec<String> = self.arguments.iter().map(|a| a.to_string()).collect();
        write!(f, "{}({})", self.function, arguments.join(", "))?;
        if let Some(guard) = &self.guard {
            write!(f, " WHEN {guard} = 1")?;
        }
        write!(f, " AS {}", self.result.name())
    }
}
