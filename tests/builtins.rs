//! Every hostable built-in answers through a service exactly as DataFusion
//! answers in-process: the same result field (name, type, nullability,
//! metadata) and the same value in every row.
//!
//! The suite is generated over DataFusion's function registry, not written
//! by hand. For each scalar built-in a service may host, the argument types
//! it accepts are found by asking DataFusion's own coercion
//! (`fields_with_udf`) about a pool of Arrow types: every width of integer,
//! float and decimal, `Utf8`/`LargeUtf8`/`Utf8View`, the binaries, dates,
//! times, timestamps with and without a zone, intervals, lists of every
//! kind, structs, maps, dictionaries and dictionaries nested in lists and
//! structs. Each accepted argument list is called with every argument a
//! column, and with each argument in turn a literal (two values and a typed
//! NULL), because DataFusion shapes some result types by literal values
//! (`round(d, -1)`). The columns hold nulls and arrive in batches with an
//! empty one among them; the calls run again over a table with no rows.
//!
//! One session answers twice: through the service (`rpcop.rewrite` on,
//! every hostable built-in in one service reached over Arrow Flight), and
//! in-process (`rpcop.rewrite` off). A call that fails in-process must fail
//! through the service too.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, FixedSizeListArray, Float64Array,
    Int32Array, Int64Array, ListArray, MapBuilder, NullArray, StringArray, StringBuilder,
    StructArray, UInt64Array, new_empty_array,
};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Float32Type, Int64Type, IntervalUnit, Schema, SchemaRef, TimeUnit,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{Expr, ScalarUDF, Volatility};
use datafusion::prelude::{col, lit};
use futures::{FutureExt, StreamExt, TryStreamExt};
use rpcop::{FunctionLibrary, RpcSession};

/// The rows of the pool's columns; row 2 is NULL in every column.
const ROWS: usize = 6;
/// The rows whose values are also tried as literals: two values, a NULL.
const LITERAL_ROWS: [usize; 3] = [0, 1, 2];
/// The longest argument list tried.
const MAX_ARITY: usize = 3;
/// How many of DataFusion's example argument lists of each length are tried.
const EXAMPLES: usize = 8;

/// One column of the pool: a name and six values of one Arrow type.
struct Column {
    name: String,
    values: ArrayRef,
}

fn ints() -> ArrayRef {
    Arc::new(Int64Array::from(vec![
        Some(-1),
        Some(2),
        None,
        Some(0),
        Some(7),
        Some(-100),
    ]))
}

fn uints() -> ArrayRef {
    Arc::new(UInt64Array::from(vec![
        Some(1),
        Some(2),
        None,
        Some(0),
        Some(7),
        Some(100),
    ]))
}

fn floats() -> ArrayRef {
    Arc::new(Float64Array::from(vec![
        Some(-1.5),
        Some(2.0),
        None,
        Some(0.0),
        Some(12345.55),
        Some(7.25),
    ]))
}

fn strings() -> ArrayRef {
    Arc::new(StringArray::from(vec![
        Some("day"),
        Some("Ab c"),
        None,
        Some(""),
        Some("2026-11-24T10:11:12"),
        Some("héllo wörld, longer than twelve bytes"),
    ]))
}

fn list_of(values: ArrayRef, offsets: &[i32], nulls: &[bool]) -> ArrayRef {
    let item = Arc::new(Field::new_list_field(values.data_type().clone(), true));
    Arc::new(
        ListArray::try_new(
            item,
            datafusion::arrow::buffer::OffsetBuffer::new(offsets.to_vec().into()),
            values,
            Some(nulls.iter().map(|n| !n).collect::<Vec<_>>().into()),
        )
        .unwrap(),
    )
}

fn converted(values: &ArrayRef, to: impl Into<DataType>) -> ArrayRef {
    let to = to.into();
    cast(values, &to).unwrap_or_else(|e| panic!("cast to {to}: {e}"))
}

/// The pool: a column of every Arrow type the suite tries.
fn pool() -> Vec<Column> {
    let mut columns: Vec<(String, ArrayRef)> = Vec::new();
    let mut add = |name: &str, values: ArrayRef| {
        assert_eq!(values.len(), ROWS, "{name}");
        columns.push((format!("c_{name}"), values));
    };
    add("null", Arc::new(NullArray::new(ROWS)));
    add(
        "bool",
        Arc::new(BooleanArray::from(vec![
            Some(true),
            Some(false),
            None,
            Some(true),
            Some(false),
            Some(true),
        ])),
    );
    for (name, to) in [
        ("i8", DataType::Int8),
        ("i16", DataType::Int16),
        ("i32", DataType::Int32),
        ("i64", DataType::Int64),
    ] {
        add(name, converted(&ints(), to));
    }
    for (name, to) in [
        ("u8", DataType::UInt8),
        ("u16", DataType::UInt16),
        ("u32", DataType::UInt32),
        ("u64", DataType::UInt64),
    ] {
        add(name, converted(&uints(), to));
    }
    for (name, to) in [
        ("f16", DataType::Float16),
        ("f32", DataType::Float32),
        ("f64", DataType::Float64),
        ("dec32", DataType::Decimal32(9, 2)),
        ("dec64", DataType::Decimal64(18, 4)),
        ("dec128", DataType::Decimal128(10, 2)),
        ("dec128_wide", DataType::Decimal128(38, 10)),
        ("dec256", DataType::Decimal256(50, 5)),
    ] {
        add(name, converted(&floats(), to));
    }
    for (name, to) in [
        ("utf8", DataType::Utf8),
        ("large_utf8", DataType::LargeUtf8),
        ("utf8_view", DataType::Utf8View),
        ("binary", DataType::Binary),
        ("large_binary", DataType::LargeBinary),
        ("binary_view", DataType::BinaryView),
        (
            "dict_utf8",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        ),
        (
            "dict_large_utf8",
            DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::LargeUtf8)),
        ),
    ] {
        add(name, converted(&strings(), to));
    }
    add(
        "dict_i64",
        converted(
            &ints(),
            DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Int64)),
        ),
    );
    add(
        "fixed_binary",
        Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                [
                    Some(b"ab"),
                    Some(b"\x00\xff"),
                    None,
                    Some(b"  "),
                    Some(b"zz"),
                    Some(b"\x01\x02"),
                ]
                .into_iter(),
                2,
            )
            .unwrap(),
        ),
    );
    let days: ArrayRef = Arc::new(Int32Array::from(vec![
        Some(0),
        Some(19_000),
        None,
        Some(-1),
        Some(20_416),
        Some(11_016),
    ]));
    add("date32", converted(&days, DataType::Date32));
    add(
        "date64",
        converted(&converted(&days, DataType::Date32), DataType::Date64),
    );
    let seconds: ArrayRef = Arc::new(Int64Array::from(vec![
        Some(0),
        Some(1_700_000_000),
        None,
        Some(-86_400),
        Some(1_764_000_000),
        Some(951_782_400),
    ]));
    let timestamps = converted(&seconds, DataType::Timestamp(TimeUnit::Second, None));
    add("ts_s", Arc::clone(&timestamps));
    add(
        "ts_ns",
        converted(&timestamps, DataType::Timestamp(TimeUnit::Nanosecond, None)),
    );
    add(
        "ts_us_utc",
        converted(
            &timestamps,
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        ),
    );
    let micros: ArrayRef = Arc::new(Int64Array::from(vec![
        Some(0),
        Some(3_600_000_000),
        None,
        Some(1),
        Some(86_399_999_999),
        Some(45_296_000_000),
    ]));
    add(
        "time64_us",
        converted(&micros, DataType::Time64(TimeUnit::Microsecond)),
    );
    add(
        "duration_us",
        converted(&micros, DataType::Duration(TimeUnit::Microsecond)),
    );
    add(
        "interval_mdn",
        converted(
            &converted(&micros, DataType::Duration(TimeUnit::Microsecond)),
            DataType::Interval(IntervalUnit::MonthDayNano),
        ),
    );
    let list_i64 = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
        Some(vec![Some(-1), Some(2)]),
        Some(vec![]),
        None,
        Some(vec![Some(0), None]),
        Some(vec![Some(7)]),
        Some(vec![Some(3), Some(1), Some(2)]),
    ])) as ArrayRef;
    add("list_i64", Arc::clone(&list_i64));
    add(
        "large_list_i64",
        converted(
            &list_i64,
            DataType::LargeList(Arc::new(Field::new_list_field(DataType::Int64, true))),
        ),
    );
    add(
        "list_f64",
        converted(
            &list_i64,
            DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
        ),
    );
    add(
        "fixed_list_f32",
        Arc::new(
            FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
                vec![
                    Some(vec![Some(1.0), Some(2.0), Some(3.0)]),
                    Some(vec![Some(0.0), Some(0.0), Some(0.0)]),
                    None,
                    Some(vec![Some(-1.0), Some(0.5), Some(2.0)]),
                    Some(vec![Some(1.0), None, Some(1.0)]),
                    Some(vec![Some(3.0), Some(4.0), Some(5.0)]),
                ],
                3,
            ),
        ),
    );
    let words: ArrayRef = Arc::new(StringArray::from(vec![
        Some("a"),
        Some("b"),
        None,
        Some("c"),
        Some("day"),
        Some("x"),
        Some("a"),
    ]));
    let word_lists = list_of(
        Arc::clone(&words),
        &[0, 2, 2, 2, 4, 5, 7],
        &[false, false, true, false, false, false],
    );
    add("list_utf8", Arc::clone(&word_lists));
    add(
        "list_dict_utf8",
        converted(
            &word_lists,
            DataType::List(Arc::new(Field::new_list_field(
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ))),
        ),
    );
    add(
        "list_list_i64",
        list_of(
            Arc::clone(&list_i64),
            &[0, 2, 2, 2, 3, 5, 6],
            &[false, false, true, false, false, false],
        ),
    );
    let struct_of = |second: ArrayRef| -> ArrayRef {
        Arc::new(
            StructArray::try_new(
                vec![
                    Arc::new(Field::new("a", DataType::Int64, true)),
                    Arc::new(Field::new("b", second.data_type().clone(), true)),
                ]
                .into(),
                vec![ints(), second],
                Some(vec![true, true, false, true, true, true].into()),
            )
            .unwrap(),
        )
    };
    add("struct", struct_of(strings()));
    add(
        "struct_dict",
        struct_of(converted(
            &strings(),
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        )),
    );
    let mut maps = MapBuilder::new(None, StringBuilder::new(), Int64Array::builder(8));
    for row in [
        &[("a", Some(1)), ("b", Some(2))][..],
        &[],
        &[],
        &[("c", None)],
        &[("day", Some(7))],
        &[("x", Some(-1))],
    ]
    .into_iter()
    .enumerate()
    {
        for (key, value) in row.1 {
            maps.keys().append_value(key);
            maps.values().append_option(*value);
        }
        maps.append(row.0 != 2).unwrap();
    }
    add("map", Arc::new(maps.finish()));
    columns
        .into_iter()
        .map(|(name, values)| Column { name, values })
        .collect()
}

/// How a table of the pool holds its rows, in one partition.
#[derive(Debug, Clone, Copy)]
enum Batches {
    /// Three rows, an empty batch, three rows.
    WithEmpty,
    /// The six rows in one batch.
    Rows,
    /// One empty batch.
    None,
    /// No batch at all.
    Nothing,
}

/// The pool as a table of one partition.
fn table(pool: &[Column], batches: Batches) -> MemTable {
    let schema: SchemaRef = Arc::new(Schema::new(
        pool.iter()
            .map(|c| Field::new(&c.name, c.values.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let slice = |offset: usize, length: usize| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            pool.iter()
                .map(|c| c.values.slice(offset, length))
                .collect(),
        )
        .unwrap()
    };
    let batches = match batches {
        Batches::WithEmpty => vec![slice(0, 3), slice(0, 0), slice(3, 3)],
        Batches::Rows => vec![slice(0, ROWS)],
        Batches::None => vec![slice(0, 0)],
        Batches::Nothing => vec![],
    };
    MemTable::try_new(schema, vec![batches]).unwrap()
}

/// The scalar built-ins a service may host, one per implementation (an
/// alias calls the same function), with at least one argument: a call
/// without arguments is a constant DataFusion folds before any service
/// could be asked.
fn hostable(session: &RpcSession) -> Vec<Arc<ScalarUDF>> {
    let state = session.context().state();
    let mut seen = BTreeSet::new();
    FunctionLibrary::default()
        .names()
        .filter_map(|name| state.scalar_functions().get(name).cloned())
        .filter(|udf| seen.insert(udf.name().to_string()))
        .filter(|udf| !udf.short_circuits() && udf.signature().volatility != Volatility::Volatile)
        .collect()
}

/// The argument-type lists of `udf` found in the pool, each as the pool's
/// column indices: one argument of every pool type it accepts; for two and
/// more arguments, the lists DataFusion's own examples of the signature
/// name (a few of each length), and every list that differs in one position
/// from the first accepted one (an example, or one pool type repeated).
fn accepted(udf: &ScalarUDF, pool: &[Column]) -> Vec<Vec<usize>> {
    let field = |i: usize| -> FieldRef {
        Arc::new(Field::new("x", pool[i].values.data_type().clone(), true))
    };
    let accepts = |types: &[usize]| {
        let fields: Vec<FieldRef> = types.iter().map(|&i| field(i)).collect();
        fields_with_udf(&fields, udf).is_ok()
    };
    let mut found: Vec<Vec<usize>> = Vec::new();
    let keep = |types: Vec<usize>, found: &mut Vec<Vec<usize>>| {
        if !found.contains(&types) && accepts(&types) {
            found.push(types);
        }
    };
    let examples: Vec<Vec<usize>> = udf
        .signature()
        .type_signature
        .get_example_types()
        .iter()
        .filter_map(|example| {
            example
                .iter()
                .map(|t| pool.iter().position(|c| c.values.data_type() == t))
                .collect::<Option<Vec<usize>>>()
        })
        .filter(|i| !i.is_empty() && i.len() <= MAX_ARITY)
        .collect();
    for i in 0..pool.len() {
        keep(vec![i], &mut found);
    }
    for arity in 2..=MAX_ARITY {
        for example in examples.iter().filter(|e| e.len() == arity).take(EXAMPLES) {
            keep(example.clone(), &mut found);
        }
        let base = found
            .iter()
            .find(|t| t.len() == arity)
            .cloned()
            .or_else(|| {
                (0..pool.len())
                    .map(|i| vec![i; arity])
                    .find(|types| accepts(types))
            });
        let Some(base) = base else {
            continue;
        };
        keep(base.clone(), &mut found);
        for position in 0..arity {
            for i in 0..pool.len() {
                let mut types = base.clone();
                types[position] = i;
                keep(types, &mut found);
            }
        }
    }
    found
}

/// A call of `udf` on the pool's columns `types`, all of them columns, or
/// with argument `literal.0` the value of row `literal.1`.
fn call(
    udf: &Arc<ScalarUDF>,
    pool: &[Column],
    types: &[usize],
    literal: Option<(usize, usize)>,
) -> Expr {
    let args = types
        .iter()
        .enumerate()
        .map(|(position, &i)| match literal {
            Some((at, row)) if at == position => {
                lit(ScalarValue::try_from_array(&pool[i].values, row).unwrap())
            }
            _ => col(pool[i].name.as_str()),
        })
        .collect();
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(udf), args))
}

/// The calls of one argument-type list: all columns, then each argument in
/// turn a literal. Calls DataFusion would name alike are left out (a NULL
/// column gives three `NULL` literals).
fn calls(udf: &Arc<ScalarUDF>, pool: &[Column], types: &[usize]) -> Vec<Expr> {
    let mut names = BTreeSet::new();
    std::iter::once(None)
        .chain((0..types.len()).flat_map(|at| LITERAL_ROWS.map(|row| Some((at, row)))))
        .map(|literal| call(udf, pool, types, literal))
        .filter(|e| names.insert(e.schema_name().to_string()))
        .collect()
}

/// What a query answered: each output column's field and values, or the
/// error.
type Answer = Result<Vec<(FieldRef, ArrayRef)>, String>;

async fn answer(session: &RpcSession, table: &str, calls: &[Expr]) -> Answer {
    let run = async {
        let frame = session
            .context()
            .table(table)
            .await?
            .select(calls.to_vec())?;
        let stream = frame.execute_stream().await?;
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        Ok::<_, datafusion::error::DataFusionError>((schema, batches))
    };
    // some built-ins panic on some inputs in-process; a panic is an answer
    // too (the service answers it as an error)
    let (schema, batches) = std::panic::AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .map_err(|_| "panicked".to_string())?
        .map_err(|e| e.strip_backtrace())?;
    Ok(schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            let values = if parts.is_empty() {
                new_empty_array(field.data_type())
            } else {
                concat(&parts).unwrap()
            };
            (Arc::clone(field), values)
        })
        .collect())
}

/// Does `call` read no column (every argument a literal)?
fn constant(call: &Expr) -> bool {
    matches!(call, Expr::ScalarFunction(f) if f.args.iter().all(|a| matches!(a, Expr::Literal(..))))
}

/// Why the answers of `calls` differ, or `None`. A call of literals only
/// DataFusion folds into a literal while planning, which is NOT NULL when
/// its value is not NULL; through a service it is evaluated by the service
/// (the function may not be in this process at all), and its column is as
/// nullable as the function says. That difference alone is counted in
/// `constant_nullability`, not as a difference.
fn difference(
    hosted: &Answer,
    local: &Answer,
    calls: &[Expr],
    constant_nullability: &mut usize,
) -> Option<String> {
    match (hosted, local) {
        (Ok(h), Ok(l)) => {
            for (((hf, hv), (lf, lv)), call) in h.iter().zip(l).zip(calls) {
                if hf != lf {
                    let only_nullability =
                        hf.as_ref().clone().with_nullable(lf.is_nullable()) == *lf.as_ref();
                    if only_nullability && constant(call) && !lf.is_nullable() {
                        *constant_nullability += 1;
                    } else {
                        return Some(format!(
                            "field through the service {hf:?}\n    in-process {lf:?}"
                        ));
                    }
                }
                if hv != lv {
                    return Some(format!(
                        "{}: values through the service {hv:?}\n    in-process {lv:?}",
                        lf.name()
                    ));
                }
            }
            (h.len() != l.len()).then(|| "a different number of columns".to_string())
        }
        (Err(_), Err(_)) => None,
        (Ok(_), Err(l)) => Some(format!("answered through the service, in-process: {l}")),
        (Err(h), Ok(_)) => Some(format!("failed through the service: {h}")),
    }
}

/// What comparing some calls found.
#[derive(Default)]
struct Tally {
    /// Calls that fail both ways (an error, or a panic in-process).
    failing: usize,
    /// Calls of literals only whose column is nullable through a service
    /// and NOT NULL in-process (see [`difference`]).
    constant_nullability: usize,
    /// Calls that fail in-process only because DataFusion evaluates them on
    /// an empty batch too (see [`compare`]).
    empty_batch: BTreeSet<String>,
    differences: Vec<String>,
}

/// The calls of `calls` that answer in-process over `table`, and those
/// that fail (one query for all, then one per call if that fails).
async fn split_by_outcome(
    local: &RpcSession,
    table: &str,
    calls: &[Expr],
) -> (Vec<Expr>, Vec<Expr>) {
    if answer(local, table, calls).await.is_ok() {
        return (calls.to_vec(), Vec::new());
    }
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for call in calls {
        if answer(local, table, std::slice::from_ref(call))
            .await
            .is_ok()
        {
            good.push(call.clone());
        } else {
            bad.push(call.clone());
        }
    }
    (good, bad)
}

/// Compares the answers of `calls` through the service and in-process over
/// `table`. The calls that answer in-process are compared together, in one
/// query (in halves if the service fails it, down to the calls it fails);
/// each call that fails in-process must fail through the service too.
/// Returns the calls that answer in-process.
async fn compare(
    [hosted, local, clean]: [&RpcSession; 3],
    table: &str,
    calls: &[Expr],
    tally: &mut Tally,
) -> Vec<Expr> {
    let (good, bad) = split_by_outcome(local, table, calls).await;
    let describe = |calls: &[Expr], d: String| {
        let names: Vec<String> = calls.iter().map(|c| c.schema_name().to_string()).collect();
        format!("{table}: {}\n    {d}", names.join(", "))
    };
    let mut pending = vec![good.clone()];
    while let Some(calls) = pending.pop().filter(|c| !c.is_empty()) {
        let through = answer(hosted, table, &calls).await;
        if through.is_err() && calls.len() > 1 {
            let half = calls.len() / 2;
            pending.push(calls[half..].to_vec());
            pending.push(calls[..half].to_vec());
            continue;
        }
        let here = answer(local, table, &calls).await;
        if let Some(d) = difference(&through, &here, &calls, &mut tally.constant_nullability) {
            tally.differences.push(describe(&calls, d));
        }
    }
    tally.failing += bad.len();
    // each on its own (a failing call fails its query), several at once
    let answers: Vec<(Expr, Answer)> = futures::stream::iter(bad)
        .map(|call| async move {
            let through = answer(hosted, table, std::slice::from_ref(&call)).await;
            (call, through)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (call, through) in answers {
        if through.is_err() {
            continue;
        }
        // DataFusion evaluates a function on the empty batch too, and some
        // fail there only (a panic, "Empty iterator", a row out of nothing);
        // a service is never sent an empty request. Such a call answers
        // in-process over the same rows without the empty batch (`clean`), and
        // must answer the same as through the service.
        let calls = std::slice::from_ref(&call);
        let clean = answer(clean, table, calls).await;
        match difference(&through, &clean, calls, &mut tally.constant_nullability) {
            None if clean.is_ok() => {
                tally.empty_batch.insert(format!("{}", call.schema_name()));
            }
            _ => {
                let here = answer(local, table, calls).await;
                tally.differences.push(describe(
                    calls,
                    format!(
                        "answered through the service, in-process: {:?}; without the empty batch: {:?}",
                        here.err(),
                        difference(&through, &clean, calls, &mut 0)
                    ),
                ));
            }
        }
    }
    good
}

/// `calls` in groups that DataFusion can select together: no two of a
/// group with the same name (literals of different types print alike).
fn groups(calls: Vec<Expr>) -> Vec<Vec<Expr>> {
    let mut groups: Vec<(BTreeSet<String>, Vec<Expr>)> = Vec::new();
    for call in calls {
        let name = call.schema_name().to_string();
        match groups.iter_mut().find(|(names, _)| !names.contains(&name)) {
            Some((names, group)) => {
                names.insert(name);
                group.push(call);
            }
            None => groups.push((BTreeSet::from([name]), vec![call])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// Requests the service has answered so far.
async fn requests(session: &RpcSession) -> u64 {
    let region = session.service("builtins").unwrap();
    region
        .stats()
        .await
        .iter()
        .filter_map(|(_, stats)| stats.as_ref().map(|s| s.requests))
        .sum()
}

/// A session over the pool's tables `v` (rows) and `e` (no rows), in
/// batches with an empty one among them or not.
fn session(pool: &[Column], empty_batches: bool) -> RpcSession {
    let session = RpcSession::builder()
        .serve_program(env!("CARGO_BIN_EXE_rpcop"))
        .build();
    let (rows, none) = if empty_batches {
        (Batches::WithEmpty, Batches::None)
    } else {
        (Batches::Rows, Batches::Nothing)
    };
    for (name, batches) in [("v", rows), ("e", none)] {
        session
            .context()
            .register_table(name, Arc::new(table(pool, batches)))
            .unwrap();
    }
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostable_builtin_answers_as_in_process() {
    let pool = pool();
    let (hosted, local) = (session(&pool, true), session(&pool, true));
    // the same rows without empty batches (see `compare`)
    let clean = session(&pool, false);
    let sessions = [&hosted, &local, &clean];

    // one service for every built-in it accepts; the few it refuses
    // (`now()`: DataFusion plans it away) say so, naming the function
    let mut functions = hostable(&hosted);
    loop {
        let names: Vec<&str> = functions.iter().map(|f| f.name()).collect();
        let create = format!(
            "CREATE RPC SERVICE builtins FOR FUNCTION {} WITH (transport = 'flight', parallelism = 2)",
            names.join(", ")
        );
        match hosted.sql(&create).await {
            Ok(_) => break,
            Err(error) => {
                let message = error.to_string();
                let before = functions.len();
                functions.retain(|f| !message.contains(&format!("{}()", f.name())));
                assert!(
                    functions.len() < before,
                    "CREATE RPC SERVICE failed: {message}"
                );
            }
        }
    }
    assert!(
        functions.len() >= 150,
        "only {} built-ins hosted",
        functions.len()
    );

    let (mut kinds, mut cases, mut groups_run) = (0, 0, 0);
    let mut tally = Tally::default();
    let before = requests(&hosted).await;
    // `RPCOP_BUILTINS=upper,round`: only these (to look into a difference)
    let only: Option<Vec<String>> = std::env::var("RPCOP_BUILTINS")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    for udf in &functions {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == udf.name()))
        {
            continue;
        }
        let lists = accepted(udf, &pool);
        kinds += lists.len();
        let calls: Vec<Expr> = lists
            .iter()
            .flat_map(|types| calls(udf, &pool, types))
            .collect();
        cases += calls.len();
        for group in groups(calls) {
            let valid = common::within(compare(sessions, "v", &group, &mut tally)).await;
            // over no rows, the calls that answer over rows: a call that
            // fails in-process for its argument types alone (array_position
            // of a NULL-typed column) fails there even on an empty batch,
            // while through a service no row means no request
            common::within(compare(sessions, "e", &valid, &mut tally)).await;
            groups_run += 1;
        }
    }
    let served = requests(&hosted).await - before;
    if !tally.empty_batch.is_empty() {
        let names: Vec<&str> = tally.empty_batch.iter().map(String::as_str).collect();
        println!(
            "{} calls fail in-process only on the empty batch DataFusion evaluates them on \
             (a service gets no empty request): {}",
            names.len(),
            names.join(", ")
        );
    }
    println!(
        "{} built-ins hosted; {kinds} argument-type lists, {cases} calls (columns and literals), \
         each over 6 rows in 3 batches (one empty) and over no rows, in {groups_run} groups: \
         {} calls failing both ways, {served} requests answered by the service, {} calls of \
         literals only nullable through the service and NOT NULL in-process, {} differences",
        functions.len(),
        tally.failing,
        tally.constant_nullability,
        tally.differences.len()
    );
    assert!(
        tally.differences.is_empty(),
        "{} calls answer differently through the service:\n{}",
        tally.differences.len(),
        tally
            .differences
            .iter()
            .map(|d| d.chars().take(600).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // the comparison says something only if calls reached the service
    assert!(
        served as usize >= functions.len(),
        "only {served} requests reached the service for {} functions",
        functions.len()
    );
    assert!(tally.failing > 0, "no call fails: errors are not compared");
}
