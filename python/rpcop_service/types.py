"""SQL type names as arrow-udf spells them, read into pyarrow types."""

from typing import List, Union

import pyarrow as pa

TypeLike = Union[str, pa.DataType]

_NAMED = {
    "NULL": pa.null(),
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "TINYINT": pa.int8(),
    "INT8": pa.int8(),
    "SMALLINT": pa.int16(),
    "INT16": pa.int16(),
    "INT": pa.int32(),
    "INTEGER": pa.int32(),
    "INT32": pa.int32(),
    "BIGINT": pa.int64(),
    "INT64": pa.int64(),
    "UINT8": pa.uint8(),
    "UINT16": pa.uint16(),
    "UINT32": pa.uint32(),
    "UINT64": pa.uint64(),
    "FLOAT32": pa.float32(),
    "REAL": pa.float32(),
    "FLOAT": pa.float32(),
    "FLOAT64": pa.float64(),
    "DOUBLE": pa.float64(),
    "DOUBLE PRECISION": pa.float64(),
    "DATE": pa.date32(),
    "DATE32": pa.date32(),
    "TIME": pa.time64("us"),
    "TIME64": pa.time64("us"),
    "TIME WITHOUT TIME ZONE": pa.time64("us"),
    "TIMESTAMP": pa.timestamp("us"),
    "TIMESTAMP WITHOUT TIME ZONE": pa.timestamp("us"),
    "INTERVAL": pa.month_day_nano_interval(),
    "VARCHAR": pa.string(),
    "STRING": pa.string(),
    "TEXT": pa.string(),
    "LARGE_STRING": pa.large_string(),
    "BINARY": pa.binary(),
    "BYTEA": pa.binary(),
    "LARGE_BINARY": pa.large_binary(),
}


def to_data_type(t: TypeLike) -> pa.DataType:
    """A pyarrow type, or a SQL type name: ``INT``, ``VARCHAR``, ``REAL[]``,
    ``DECIMAL(10, 2)``, ``STRUCT<a:INT, b:VARCHAR>``."""
    if isinstance(t, pa.DataType):
        return t
    if not isinstance(t, str):
        raise TypeError(f"a type is a SQL type name or a pyarrow type, not {t!r}")
    text = t.strip()
    upper = " ".join(text.upper().split())
    if upper.endswith("[]"):
        return pa.list_(to_data_type(text[:-2]))
    if upper.startswith("STRUCT<") and upper.endswith(">"):
        return pa.struct(_struct_fields(text[len("STRUCT<") : -1]))
    if upper.startswith("DECIMAL") or upper.startswith("NUMERIC"):
        inner = upper[upper.find("(") + 1 : upper.rfind(")")] if "(" in upper else ""
        parts = [p.strip() for p in inner.split(",") if p.strip()]
        if len(parts) not in (1, 2):
            raise ValueError(f"unsupported type '{t}': write DECIMAL(precision, scale)")
        precision, scale = int(parts[0]), int(parts[1]) if len(parts) == 2 else 0
        return pa.decimal128(precision, scale)
    if upper in _NAMED:
        return _NAMED[upper]
    raise ValueError(f"unsupported type '{t}'; SQL names such as {', '.join(sorted(_NAMED)[:8])}, ... or a pyarrow type")


def _struct_fields(body: str) -> List[pa.Field]:
    fields, depth, start = [], 0, 0
    for i, c in enumerate(body + ","):
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "," and depth == 0:
            item = body[start:i].strip()
            start = i + 1
            if not item:
                continue
            name, _, type_name = item.partition(":")
            if not type_name:
                raise ValueError(f"a STRUCT field is name:TYPE, got '{item}'")
            fields.append(pa.field(name.strip(), to_data_type(type_name)))
    return fields
