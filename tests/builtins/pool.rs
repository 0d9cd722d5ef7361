//! The pool of argument columns: one column of every Arrow type the suite
//! tries, six rows each (row 2 NULL), and the tables that hold them.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, FixedSizeBinaryArray, FixedSizeListArray, Float64Array, Int32Array,
    Int64Array, ListArray, MapBuilder, NullArray, StringArray, StringBuilder, StructArray,
    UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Float32Type, Int64Type, IntervalUnit, Schema, SchemaRef, TimeUnit,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;

/// The rows of the pool's columns; row 2 is NULL in every column.
pub(crate) const ROWS: usize = 6;
/// The rows whose values are also tried as literals: two values, a NULL.
pub(crate) const LITERAL_ROWS: [usize; 3] = [0, 1, 2];

/// One column of the pool: a name and six values of one Arrow type.
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) values: ArrayRef,
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
pub(crate) fn pool() -> Vec<Column> {
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
    // a dictionary of dictionaries, which Arrow IPC cannot carry as it is
    let dict_u32 = converted(
        &strings(),
        DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8)),
    );
    add(
        "dict_dict_utf8",
        converted(
            &dict_u32,
            DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Dictionary(
                    Box::new(DataType::UInt32),
                    Box::new(DataType::Utf8),
                )),
            ),
        ),
    );
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
pub(crate) enum Batches {
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
pub(crate) fn table(pool: &[Column], batches: Batches) -> MemTable {
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
