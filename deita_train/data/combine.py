"""The pool from the sources' canonical rows: concatenated in recipe order (memory-mapped tables side by side, no row
copied), each field one type across sources, and `id`, each row's 0-based position in the pool, added as a
memory-mapped column (`pool_cache.id_column`).

A column some sources lack is null in their rows (`concatenate_datasets` fills it, typed like the others). A field
typed differently across sources becomes their common type when Arrow has one (int and float: double; structs
with different keys: one struct with all of them); otherwise it is a DataError naming the field and, for each of the
two sources, its first row holding the field.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, concatenate_datasets

from deita_train.data.config import SourceConfig
from deita_train.data.pool_cache import CachedSource, id_column
from deita_train.data.report import DataError, type_conflict


def first_holding(part: CachedSource, source: SourceConfig, name: str) -> str:
    """Where the first row of `part` with a value in column `name` came from, e.g. `a.jsonl (line 3)`."""
    table = part.dataset.data
    index = pc.index(pc.is_valid(table.column(name)), True).as_py()
    return f"{source.path} ({part.unit} {table.column('source_row')[max(index, 0)].as_py()})"


def common_type(first: pa.DataType, other: pa.DataType) -> pa.DataType:
    """The type holding values of both (raises pyarrow's error when there is none)."""
    schemas = [pa.schema([("field", first)]), pa.schema([("field", other)])]
    return pa.unify_schemas(schemas, promote_options="permissive").field("field").type


def column_types(parts: list[tuple[CachedSource, SourceConfig]]) -> dict[str, pa.DataType]:
    """Every column's type across the parts, in the order columns are first met."""
    types: dict[str, pa.DataType] = {}
    owners: dict[str, tuple[int, pa.DataType]] = {}  # the first part giving the column a (non-null) type, and it
    for i, (part, source) in enumerate(parts):
        for field in part.dataset.data.schema:
            name, kind = field.name, field.type
            known = types.setdefault(name, kind)
            if pa.types.is_null(kind):
                continue
            if name not in owners:
                types[name], owners[name] = kind, (i, kind)
                continue
            if kind == known:
                continue
            try:
                types[name] = common_type(known, kind)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                owner, owner_kind = owners[name]
                first = (first_holding(*parts[owner], name), owner_kind)
                raise DataError(type_conflict(name, first, (first_holding(part, source, name), kind))) from None
    return types


def combine(parts: list[CachedSource], sources: list[SourceConfig]) -> Dataset:
    """The pool: `id`, then every source's columns, rows in recipe order. Sources with no row left add no column."""
    used = [(part, source) for part, source in zip(parts, sources, strict=True) if len(part.dataset)]
    types = column_types(used)
    features = Features.from_arrow_schema(pa.schema(list(types.items())))
    aligned = []
    for part, _ in used:
        dataset = part.dataset
        for name in dataset.column_names:
            if dataset.data.schema.field(name).type != types[name]:
                dataset = dataset.cast_column(name, features[name])
        aligned.append(dataset)
    pool = concatenate_datasets(aligned) if len(aligned) > 1 else aligned[0]
    pool = concatenate_datasets([id_column(len(pool)), pool], axis=1)
    return pool.select_columns(["id", *types])
