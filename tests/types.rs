//! Through a service, every function returns what DataFusion returns for it
//! in-process, over a table of Arrow types, with nulls and empty batches.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, Decimal128Array, DictionaryArray, Float64Array, Int32Array,
    Int64Array, LargeStringArray, ListArray, StringArray, StringViewArray, StructArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use rpcop::ServiceClient;
use rpcop::wire::scalar_argument;

/// An argument: a column, or a constant written as SQL text too.
enum Arg {
    Column(ArrayRef),
    Constant(ScalarValue, &'static str),
}

struct Case {
    function: &'static str,
    args: Vec<Arg>,
}

fn column(array: impl Array + 'static) -> Arg {
    Arg::Column(Arc::new(array))
}

fn cases() -> Vec<Case> {
    let text = || StringArray::from(vec![Some("hello"), None, Some("Grüße"), Some("")]);
    let dictionary = DictionaryArray::<Int32Type>::try_new(
        Int32Array::from(vec![Some(1), None, Some(0), Some(1)]),
        Arc::new(StringArray::from(vec!["ab", "Cd"])),
    )
    .unwrap();
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), None, Some(3)]),
        None,
        Some(vec![]),
        Some(vec![Some(7)]),
    ]);
    let structs = StructArray::from(vec![
        (
            Arc::new(Field::new("a", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])) as ArrayRef,
        ),
        (
            Arc::new(Field::new("b", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![
                Some("x"),
                Some("y"),
                None,
                Some("z"),
            ])) as ArrayRef,
        ),
    ]);
    let decimals = Decimal128Array::from(vec![Some(12345), None, Some(-678), Some(0)])
        .with_precision_and_scale(10, 2)
        .unwrap();
    let timestamps = TimestampMicrosecondArray::from(vec![
        Some(1_700_000_000_000_000),
        None,
        Some(0),
        Some(-86_400_000_000),
    ]);
    vec![
        Case {
            function: "upper",
            args: vec![column(text())],
        },
        Case {
            function: "upper",
            args: vec![column(LargeStringArray::from(vec![
                Some("a"),
                None,
                Some("ß"),
                Some(""),
            ]))],
        },
        Case {
            function: "lower",
            args: vec![column(StringViewArray::from(vec![
                Some("ABC"),
                None,
                Some("a long string, longer than twelve bytes"),
                Some(""),
            ]))],
        },
        Case {
            function: "upper",
            args: vec![column(dictionary)],
        },
        Case {
            function: "character_length",
            args: vec![column(text())],
        },
        Case {
            function: "concat",
            args: vec![
                column(text()),
                column(StringArray::from(vec![
                    Some("!"),
                    Some("?"),
                    None,
                    Some("."),
                ])),
            ],
        },
        Case {
            function: "substr",
            args: vec![
                column(text()),
                Arg::Constant(ScalarValue::Int64(Some(2)), "2"),
                Arg::Constant(ScalarValue::Int64(Some(3)), "3"),
            ],
        },
        Case {
            function: "sha256",
            args: vec![column(BinaryArray::from(vec![
                Some(b"abc".as_ref()),
                None,
                Some(b"".as_ref()),
                Some(b"\x00\xff".as_ref()),
            ]))],
        },
        Case {
            function: "sha256",
            args: vec![column(text())],
        },
        Case {
            function: "abs",
            args: vec![column(Int64Array::from(vec![
                Some(-3),
                None,
                Some(0),
                Some(i64::MAX),
            ]))],
        },
        Case {
            function: "sqrt",
            args: vec![column(Float64Array::from(vec![
                Some(4.0),
                None,
                Some(2.0),
                Some(9.0),
            ]))],
        },
        Case {
            function: "abs",
            args: vec![column(decimals)],
        },
        Case {
            function: "cardinality",
            args: vec![column(list.clone())],
        },
        Case {
            function: "array_length",
            args: vec![column(list)],
        },
        Case {
            function: "get_field",
            args: vec![
                column(structs),
                Arg::Constant(ScalarValue::Utf8(Some("b".into())), "'b'"),
            ],
        },
        Case {
            function: "date_trunc",
            args: vec![
                Arg::Constant(ScalarValue::Utf8(Some("day".into())), "'day'"),
                column(timestamps.clone()),
            ],
        },
        Case {
            function: "date_part",
            args: vec![
                Arg::Constant(ScalarValue::Utf8(Some("year".into())), "'year'"),
                column(timestamps),
            ],
        },
        Case {
            function: "greatest",
            args: vec![
                column(Int64Array::from(vec![None, Some(2), None, None])),
                column(Int64Array::from(vec![Some(1), None, None, Some(4)])),
            ],
        },
        Case {
            function: "nullif",
            args: vec![
                column(text()),
                Arg::Constant(ScalarValue::Utf8(Some("".into())), "''"),
            ],
        },
        Case {
            function: "embed",
            args: vec![column(text())],
        },
        Case {
            function: "classify",
            args: vec![column(StringArray::from(vec![
                Some("the election"),
                None,
                Some("rust software"),
                Some("soup"),
            ]))],
        },
        Case {
            function: "model_sim",
            args: vec![
                column(text()),
                Arg::Constant(ScalarValue::Int64(Some(0)), "0"),
                Arg::Constant(ScalarValue::Int64(Some(1)), "1"),
            ],
        },
    ]
}

/// The argument batch a service receives, and the SQL that runs the same
/// call in-process over a table `t` of the column arguments.
fn prepare(case: &Case, rows: Option<usize>) -> (RecordBatch, RecordBatch, String) {
    let slice = |a: &ArrayRef| match rows {
        Some(n) => a.slice(0, n),
        None => Arc::clone(a),
    };
    let length = case
        .args
        .iter()
        .find_map(|a| match a {
            Arg::Column(c) => Some(slice(c).len()),
            Arg::Constant(..) => None,
        })
        .unwrap_or(0);
    let mut wire_fields = Vec::new();
    let mut wire_columns = Vec::new();
    let mut table_fields = Vec::new();
    let mut table_columns = Vec::new();
    let mut sql_args = Vec::new();
    for (i, arg) in case.args.iter().enumerate() {
        match arg {
            Arg::Column(array) => {
                let array = slice(array);
                let field = Field::new(format!("c{i}"), array.data_type().clone(), true);
                sql_args.push(format!("c{i}"));
                wire_fields.push(field.clone());
                wire_columns.push(Arc::clone(&array));
                table_fields.push(field);
                table_columns.push(array);
            }
            Arg::Constant(value, sql) => {
                let array = value.to_array_of_size(length).unwrap();
                let field = Field::new(format!("c{i}"), array.data_type().clone(), true);
                wire_fields.push(scalar_argument(&field));
                wire_columns.push(array);
                sql_args.push(sql.to_string());
            }
        }
    }
    let wire = RecordBatch::try_new(Arc::new(Schema::new(wire_fields)), wire_columns).unwrap();
    let table = RecordBatch::try_new(Arc::new(Schema::new(table_fields)), table_columns).unwrap();
    let sql = format!(
        "SELECT {}({}) AS r FROM t",
        case.function,
        sql_args.join(", ")
    );
    (wire, table, sql)
}

async fn in_process(table: RecordBatch, sql: &str) -> ArrayRef {
    let ctx = SessionContext::new();
    for udf in rpcop::demo::demo_udfs() {
        ctx.register_udf(udf);
    }
    let schema = table.schema();
    let rows = table.num_rows();
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(schema, vec![vec![table]]).unwrap()),
    )
    .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let arrays: Vec<ArrayRef> = batches.iter().map(|b| Arc::clone(b.column(0))).collect();
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    let out = if refs.is_empty() {
        datafusion::arrow::array::new_empty_array(&DataType::Null)
    } else {
        datafusion::arrow::compute::concat(&refs).unwrap()
    };
    assert_eq!(out.len(), rows);
    out
}

async fn check(client: &ServiceClient, case: &Case, rows: Option<usize>) {
    let (wire, table, sql) = prepare(case, rows);
    let expected = in_process(table, &sql).await;
    let actual = client
        .call(case.function, wire)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    if expected.is_empty() {
        assert!(actual.is_empty(), "{sql}: empty in, empty out");
    } else {
        assert_eq!(actual.data_type(), expected.data_type(), "{sql}");
        assert_eq!(&actual, &expected, "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_service_equals_in_process() {
    common::within(Box::pin(async {
        let cases = cases();
        let mut names: Vec<String> = cases.iter().map(|c| c.function.to_string()).collect();
        names.sort();
        names.dedup();
        let library = rpcop::demo::library();
        let region = rpcop::ServiceRegion::builder("types", library.select(&names).unwrap())
            .start()
            .await
            .unwrap();
        // over Arrow Flight (the wire), and handed over in-process
        for transport in ["flight", "auto"] {
            let mut options = region.options();
            options.set("transport", transport).unwrap();
            let client = region.client_with(options).unwrap();
            for case in &cases {
                check(&client, case, None).await;
                check(&client, case, Some(1)).await;
                // A zero-row request carries no constant's value, so a function
                // whose result type depends on one (get_field, date_part) cannot
                // answer it; callers that know the result type skip empty requests.
                if !["get_field", "date_part"].contains(&case.function) {
                    check(&client, case, Some(0)).await;
                }
            }
        }
        region.shutdown().await;
    }))
    .await;
}
