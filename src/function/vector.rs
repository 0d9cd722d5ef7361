//! `cosine_similarity(a, b)`: what DataFusion lacks among the vector
//! helpers that make embeddings useful in SQL.
//!
//! DataFusion 55 has `cosine_distance(a, b)` and `inner_product(a, b)`
//! (alias `dot_product`) over fixed-size and variable lists of numbers;
//! `cosine_similarity` is `1 - cosine_distance`, built on DataFusion's own
//! function so both take the same arguments and agree on NULLs (a NULL or
//! all-zero vector gives NULL) and on errors (lists of unequal length).

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, plan_err};
use datafusion::functions_nested::cosine_distance::cosine_distance_udf;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// The `cosine_similarity` UDF.
pub fn cosine_similarity_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(CosineSimilarity {
        distance: cosine_distance_udf(),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CosineSimilarity {
    distance: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for CosineSimilarity {
    fn name(&self) -> &str {
        "cosine_similarity"
    }

    fn signature(&self) -> &Signature {
        self.distance.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.distance.return_type(arg_types)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return plan_err!(
                "cosine_similarity takes 2 arguments (two lists of numbers), not {}",
                arg_types.len()
            );
        }
        if let Some(other) = arg_types.iter().find(|t| {
            !matches!(
                t,
                DataType::Null
                    | DataType::List(_)
                    | DataType::LargeList(_)
                    | DataType::FixedSizeList(..)
            )
        }) {
            return plan_err!(
                "cosine_similarity takes two lists of numbers (such as embed_text's \
                 FixedSizeList(384 x Float32)), not {other}"
            );
        }
        self.distance.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let distance = self.distance.invoke_with_args(args).map_err(|e| {
            exec_datafusion_err!(
                "cosine_similarity (1 - cosine_distance): {}",
                e.strip_backtrace()
            )
        })?;
        Ok(match distance {
            ColumnarValue::Array(distance) => {
                let similarity: Float64Array =
                    distance.as_primitive::<Float64Type>().unary(|d| 1.0 - d);
                ColumnarValue::Array(Arc::new(similarity))
            }
            ColumnarValue::Scalar(ScalarValue::Float64(d)) => {
                ColumnarValue::Scalar(ScalarValue::Float64(d.map(|d| 1.0 - d)))
            }
            ColumnarValue::Scalar(other) => ColumnarValue::Scalar(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Array;
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn values(sql: &str) -> Vec<Option<f64>> {
        let ctx = SessionContext::new();
        ctx.register_udf(cosine_similarity_udf());
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let column = b.column(0).as_primitive::<Float64Type>();
                (0..column.len())
                    .map(|i| column.is_valid(i).then(|| column.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn is_one_minus_datafusions_cosine_distance() {
        let got = values(
            "SELECT cosine_similarity(a, b) FROM (VALUES \
               ([1.0, 0.0], [1.0, 0.0]), ([1.0, 0.0], [0.0, 1.0]), ([1.0, 0.0], [-2.0, 0.0]), \
               ([3.0, 4.0], [4.0, 3.0]), ([0.0, 0.0], [1.0, 1.0]), (NULL, [1.0, 1.0])) AS t(a, b)",
        )
        .await;
        let want = [Some(1.0), Some(0.0), Some(-1.0), Some(0.96), None, None];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            match (g, w) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "{got:?}"),
                (g, w) => assert_eq!(*g, w, "{got:?}"),
            }
        }
    }

    #[tokio::test]
    async fn takes_fixed_size_lists_of_float32_and_constants() {
        let got = values(
            "SELECT cosine_similarity(arrow_cast([1.0, 2.0], 'FixedSizeList(2, Float32)'), \
                                      [2.0, 4.0])",
        )
        .await;
        assert!((got[0].unwrap() - 1.0).abs() < 1e-12, "{got:?}");
        let ctx = SessionContext::new();
        ctx.register_udf(cosine_similarity_udf());
        let err = ctx
            .sql("SELECT cosine_similarity([1.0], [1.0, 2.0])")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("same length"), "{err}");
    }
}
