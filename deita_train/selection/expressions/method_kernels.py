"""String methods on string columns (`startswith endswith lower upper strip lstrip rstrip`), as Python's."""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deita_train.selection.expressions.batches import Batch, Operation, fail_all
from deita_train.selection.expressions.values import UNSUPPORTED, Value, offsets_of


def method_kernel(method: str, batch: Batch, operation: Operation) -> Value:
    """A string method on a string column, with constant arguments."""
    receiver, *arguments = operation.values
    values = [argument.data for argument in arguments if argument.kind == "const"]
    if receiver.kind != "str" or receiver.offsets is not None or not accepts(method, values, len(arguments)):
        fail_all(batch, operation, UNSUPPORTED)
    strings = receiver.data
    if method in ("startswith", "endswith"):
        found = (pc.starts_with if method == "startswith" else pc.ends_with)(strings, pattern=values[0])
        return Value("bool", found.to_numpy(zero_copy_only=False))
    if method in ("lower", "upper"):
        return Value("str", change_case(strings, method))
    characters = values[0] if values and values[0] is not None else python_whitespace()
    trim = {"strip": pc.utf8_trim, "lstrip": pc.utf8_ltrim, "rstrip": pc.utf8_rtrim}[method]
    return Value("str", trim(strings, characters=characters))


def accepts(method: str, values: list[Any], arguments: int) -> bool:
    """Whether the method's constant arguments are the forms computed on columns (all of them constants)."""
    if len(values) != arguments:
        return False
    if method in ("startswith", "endswith"):
        return len(values) == 1 and isinstance(values[0], str)
    if method in ("lower", "upper"):
        return not values
    return not values or (len(values) == 1 and (values[0] is None or isinstance(values[0], str)))


@functools.cache
def python_whitespace() -> str:
    """The characters Python's `str.strip()` removes (Arrow's whitespace set differs)."""
    return "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())


@functools.cache
def case_exceptions(method: str) -> str:
    """A regex class of the characters whose Python `str.<method>()` Arrow's does not reproduce (full mappings such
    as 'ß' -> 'SS', Unicode versions), and 'Σ' for `lower` (Python's final sigma depends on the next character)."""
    codes = np.concatenate([np.arange(0xD800), np.arange(0xE000, sys.maxunicode + 1)])  # no surrogates in UTF-8
    text = "".join(map(chr, codes))
    widths = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)  # UTF-8 bytes of each character
    characters = pa.LargeStringArray.from_buffers(len(codes), pa.py_buffer(offsets_of(widths)),
                                                  pa.py_buffer(text.encode()))
    changed = pc.not_equal(getattr(pc, f"utf8_{method}")(characters), characters).to_numpy(zero_copy_only=False)
    candidates = {text[i] for i in np.flatnonzero(changed)} | {c for c in text if getattr(c, method)() != c}
    arrow = getattr(pc, f"utf8_{method}")(pa.array(sorted(candidates), pa.large_string())).to_pylist()
    odd = [c for c, mapped in zip(sorted(candidates), arrow, strict=True) if getattr(c, method)() != mapped]
    odd += ["\u03a3"] if method == "lower" else []
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in odd) + "]"


def change_case(strings: pa.Array, method: str) -> pa.Array:
    """`str.lower`/`str.upper` of every string: Arrow's, and Python's for the strings Arrow would map differently."""
    result = getattr(pc, f"utf8_{method}")(strings)
    odd = pc.match_substring_regex(strings, pattern=case_exceptions(method))
    if not pc.any(odd).as_py():
        return result
    python = [getattr(text, method)() for text in strings.filter(odd).to_pylist()]
    return pc.replace_with_mask(result, odd, pa.array(python, pa.large_string()))
