//! One call a proxy operator sends per request: the function, its
//! arguments, the rows it is evaluated on, and its result field.
//!
//! Arguments are expressions over the operator's input; a literal goes out
//! as a constant (a column marked so the instance passes the function a
//! scalar, as DataFusion does). A call with a guard (a `CASE` branch, the
//! right side of `AND`) is evaluated only on the rows where the guard is
//! `1`: its arguments are computed on those rows only, only they are sent,
//! and the other rows' results are NULL.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int8Array, new_null_array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{FieldRef, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr_common::utils::scatter;

use crate::wire::{scalar_argument, session_metadata};

/// One call the operator sends per request.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) function: String,
    /// The input columns the arguments read, in order.
    columns: Vec<usize>,
    /// The arguments, over a batch of just those columns.
    pub(crate) arguments: Vec<Arc<dyn PhysicalExpr>>,
    /// The arguments as planned: over the input's columns (as EXPLAIN
    /// shows them, and as a plan codec sends them).
    planned: Vec<Arc<dyn PhysicalExpr>>,
    /// The field of each argument as DataFusion plans it (name, type,
    /// nullability, metadata): sent with its values, since some functions
    /// read it (`arrow_field`, `arrow_metadata`, extension types).
    fields: Vec<FieldRef>,
    /// `1` on the rows the call is evaluated on; `None`: every row.
    pub(crate) guard: Option<Arc<dyn PhysicalExpr>>,
    pub(crate) result: FieldRef,
    /// The session's options that differ from DataFusion's defaults, as
    /// argument schema metadata ([`session_metadata`]).
    session: HashMap<String, String>,
}

/// The rows of a request one call is evaluated on.
pub(crate) enum Rows {
    /// Every row.
    All,
    /// None: the result is all NULL and nothing is sent.
    None,
    /// Those where the mask is true.
    Some(BooleanArray),
}

impl Call {
    /// A call of `function` with `arguments` over the operator's input.
    /// Only the columns they read are kept (and, for a guarded call,
    /// filtered), not the whole request.
    pub(crate) fn new(
        function: String,
        arguments: Vec<Arc<dyn PhysicalExpr>>,
        guard: Option<Arc<dyn PhysicalExpr>>,
        result: FieldRef,
        input: &Schema,
        options: &ConfigOptions,
    ) -> Result<Self> {
        let fields = arguments
            .iter()
            .map(|argument| argument.return_field(input))
            .collect::<Result<Vec<_>>>()?;
        let mut columns: Vec<usize> = arguments
            .iter()
            .flat_map(collect_columns)
            .map(|c| c.index())
            .collect();
        columns.sort_unstable();
        columns.dedup();
        let planned = arguments.clone();
        let arguments = arguments
            .into_iter()
            .map(|argument| {
                argument
                    .transform_down(|e| {
                        let Some(column) = e.downcast_ref::<Column>() else {
                            return Ok(Transformed::no(e));
                        };
                        // always found: `columns` holds every column the arguments read
                        let at = columns
                            .binary_search(&column.index())
                            .unwrap_or_else(|at| at);
                        Ok(Transformed::yes(
                            Arc::new(Column::new(column.name(), at)) as Arc<dyn PhysicalExpr>
                        ))
                    })
                    .map(|t| t.data)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            function,
            columns,
            arguments,
            planned,
            fields,
            guard,
            result,
            session: session_metadata(options),
        })
    }

    /// The arguments as planned: expressions over the operator's input.
    #[cfg(feature = "ballista")]
    pub(crate) fn planned_arguments(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.planned
    }

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
            _ => Rows::Some(mask),
        })
    }

    /// The argument batch of this call for `selected` rows of `request`:
    /// its arguments computed on those rows only.
    pub(crate) fn arguments(&self, request: &RecordBatch, selected: &Rows) -> Result<RecordBatch> {
        let read = request.project(&self.columns)?;
        let rows = match selected {
            Rows::Some(mask) => filter_record_batch(&read, mask)?,
            Rows::All | Rows::None => read,
        };
        let rows = &rows;
        let count = rows.num_rows();
        let mut fields = Vec::with_capacity(self.arguments.len());
        let mut columns = Vec::with_capacity(self.arguments.len());
        for (argument, field) in self.arguments.iter().zip(&self.fields) {
            match argument.evaluate(rows)? {
                ColumnarValue::Array(array) => {
                    fields.push(field.as_ref().clone());
                    columns.push(array);
                }
                ColumnarValue::Scalar(value) => {
                    fields.push(scalar_argument(field));
                    columns.push(value.to_array_of_size(count)?);
                }
            }
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new_with_metadata(fields, self.session.clone())),
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
            Rows::Some(mask) => scatter(mask, result.as_ref())?,
        })
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self.planned.iter().map(ToString::to_string).collect();
        write!(f, "{}({})", self.function, shown.join(", "))?;
        if let Some(guard) = &self.guard {
            write!(f, " WHEN {guard} = 1")?;
        }
        write!(f, " AS {}", self.result.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::common::ScalarValue;
    use datafusion::physical_expr::expressions::{CaseExpr, lit};

    #[test]
    fn a_guarded_call_sends_only_its_rows_and_only_its_columns() {
        let request = RecordBatch::try_from_iter([
            ("a", Arc::new(Int32Array::from(vec![1, 2, 3])) as ArrayRef),
            (
                "b",
                Arc::new(StringArray::from(vec!["x", "y", "z"])) as ArrayRef,
            ),
            ("c", Arc::new(Int32Array::from(vec![7, 8, 9])) as ArrayRef),
        ])
        .unwrap();
        // send b where a >= 2
        let a: Arc<dyn PhysicalExpr> = Arc::new(Column::new("a", 0));
        let when = Arc::new(datafusion::physical_expr::expressions::BinaryExpr::new(
            a,
            datafusion::logical_expr::Operator::GtEq,
            lit(2),
        ));
        let guard: Arc<dyn PhysicalExpr> = Arc::new(
            CaseExpr::try_new(
                None,
                vec![(when, lit(ScalarValue::Int8(Some(1))))],
                Some(lit(ScalarValue::Int8(Some(0)))),
            )
            .unwrap(),
        );
        let result = Arc::new(Field::new("r", DataType::Utf8, true));
        let call = Call::new(
            "upper".to_string(),
            vec![Arc::new(Column::new("b", 1)), lit("!")],
            Some(guard),
            result,
            request.schema().as_ref(),
            &ConfigOptions::default(),
        )
        .unwrap();
        assert_eq!(
            call.to_string(),
            "upper(b@1, !) WHEN CASE WHEN a@0 >= 2 THEN 1 ELSE 0 END = 1 AS r"
        );
        let rows = call.rows(&request).unwrap();
        let arguments = call.arguments(&request, &rows).unwrap();
        // two rows, the argument column and the constant: not `a` or `c`
        assert_eq!(arguments.num_rows(), 2);
        assert_eq!(arguments.num_columns(), 2);
        let sent = arguments
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(sent.iter().collect::<Vec<_>>(), vec![Some("y"), Some("z")]);
        // the answers go back to their rows, NULL elsewhere
        let answer: ArrayRef = Arc::new(StringArray::from(vec!["Y", "Z"]));
        let column = call.result_column(&rows, 3, answer).unwrap();
        let column = column.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            column.iter().collect::<Vec<_>>(),
            vec![None, Some("Y"), Some("Z")]
        );
    }
}
