"""A Python function with the SQL signature ``@udf`` gives it."""

import inspect
from typing import Callable, List, Optional, Sequence, Union

import pyarrow as pa

from .types import TypeLike, to_data_type


class ScalarFunction:
    """A scalar function: one result per row.

    Row-wise (``batch=False``) it is called once per row with Python values;
    batched (``batch=True``) once per request with one ``pyarrow.Array`` per
    argument, and returns one array (or a sequence) of as many values.
    """

    def __init__(
        self,
        func: Callable,
        input_types: Union[TypeLike, Sequence[TypeLike]],
        result_type: TypeLike,
        name: Optional[str] = None,
        batch: bool = False,
    ):
        if isinstance(input_types, (str, pa.DataType)):
            input_types = [input_types]
        self.func = func
        self.name = name or getattr(func, "__name__", type(func).__name__)
        self.batch = batch
        self.input_types: List[pa.DataType] = [to_data_type(t) for t in input_types]
        self.result_type: pa.DataType = to_data_type(result_type)
        try:
            names = inspect.getfullargspec(func).args
        except TypeError:
            names = []
        if len(names) != len(self.input_types):
            names = [f"arg{i}" for i in range(len(self.input_types))]
        self.input_schema = pa.schema(
            [pa.field(n, t) for n, t in zip(names, self.input_types)]
        )
        self.result_schema = pa.schema([pa.field(self.name, self.result_type)])

    def __call__(self, *args):
        return self.func(*args)

    def conform(self, batch: pa.RecordBatch) -> List[pa.Array]:
        """The batch's columns cast to the declared argument types."""
        if batch.num_columns != len(self.input_types):
            raise TypeError(
                f"{batch.num_columns} argument(s) for {len(self.input_types)}"
            )
        columns = []
        for column, wanted in zip(batch.columns, self.input_types):
            if isinstance(column.type, pa.DictionaryType):
                column = column.dictionary_decode()
            columns.append(column if column.type == wanted else column.cast(wanted))
        return columns

    def evaluate(self, columns: List[pa.Array], rows: int) -> pa.Array:
        """The function over ``rows`` rows: an array of the result type."""
        if self.batch:
            result = self.func(*columns)
        else:
            values = [column.to_pylist() for column in columns]
            result = [self.func(*row) for row in zip(*values)] if values else [
                self.func() for _ in range(rows)
            ]
        if isinstance(result, pa.ChunkedArray):
            result = result.combine_chunks()
        if not isinstance(result, pa.Array):
            result = pa.array(result, type=self.result_type)
        elif result.type != self.result_type:
            result = result.cast(self.result_type)
        if len(result) != rows:
            raise ValueError(f"returned {len(result)} values for {rows} rows")
        return result


def udf(
    input_types: Union[TypeLike, Sequence[TypeLike]],
    result_type: TypeLike,
    name: Optional[str] = None,
    batch: bool = False,
) -> Callable[[Callable], ScalarFunction]:
    """Declares a scalar function, as arrow-udf's ``@udf`` does.

    ``input_types`` and ``result_type`` are SQL type names (``'VARCHAR'``,
    ``'BIGINT'``, ``'REAL[]'``, ``'DECIMAL(10, 2)'``) or pyarrow types.
    ``batch=True`` hands the function whole ``pyarrow.Array`` columns (the
    fast path for models) instead of one row of Python values at a time.

    ```
    @udf(input_types=["INT", "INT"], result_type="INT")
    def gcd(x, y):
        while y:
            x, y = y, x % y
        return x
    ```
    """
    return lambda func: ScalarFunction(func, input_types, result_type, name, batch)
