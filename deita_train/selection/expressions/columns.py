"""Arrow table columns read as Values: one array per column, null rows found, numbers/strings/lists decoded."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deita_train.selection.expressions.values import Value, offsets_of


def is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def readable(column: pa.ChunkedArray) -> pa.Array:
    """A table column as one array; strings as large_string, so that more than 2 GiB of text stays one array."""
    if is_string(column.type):
        column = column.cast(pa.large_string())
    elif is_list(column.type) and is_string(column.type.value_type):
        column = column.cast(pa.large_list(pa.large_string()))
    return column.combine_chunks()


def null_rows(arrays: dict[str, pa.Array], rows: int) -> np.ndarray:
    """Rows with a null in one of `arrays`, or a null inside a list."""
    null = np.zeros(rows, dtype=bool)
    for array in arrays.values():
        null |= array.is_null().to_numpy(zero_copy_only=False)
        items = array.flatten() if is_list(array.type) else None
        if items is not None and items.null_count:
            parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
            null[parents[items.is_null().to_numpy(zero_copy_only=False)]] = True
    return null


def column_value(array: pa.Array) -> Value | None:
    """An array without nulls as a Value: numbers, booleans, strings, or lists of them; None for other types."""
    if not is_list(array.type):
        return item_value(array)
    items = item_value(array.flatten())
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    return None if items is None else Value(items.kind, items.data, offsets_of(lengths))


def item_value(array: pa.Array) -> Value | None:
    """Scalars as a Value: booleans, integers (as int64), floats (as float64), strings; None for other types."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind = array.type
    if pa.types.is_boolean(kind):
        return Value("bool", array.to_numpy(zero_copy_only=False))
    if pa.types.is_integer(kind):
        return Value("int", array.cast(pa.int64()).to_numpy(zero_copy_only=False))
    if pa.types.is_floating(kind):
        return Value("float", array.cast(pa.float64()).to_numpy(zero_copy_only=False))
    if is_string(kind):
        return Value("str", array.cast(pa.large_string()))
    return None
