"""A small, safe expression language over a row's columns, for `select.filters` and score expressions.

Text is parsed with Python's `ast` (parse only: nothing is ever passed to `eval`/`exec`), every node is
checked against an allow-list, and the tree is turned into plain Python closures. Allowed:

- literals (numbers, strings, booleans, None), lists and tuples of them, column names;
- `and`, `or`, `not`; comparisons `== != < <= > >= in not in` (chains too); `+ - * / // % **`, unary `-`/`+`;
- calls of `len sum min max abs mean`, and the string methods `startswith endswith lower upper strip
  lstrip rstrip`; indexing with an integer literal (`quality[0]`, `quality[-1]`).

Everything else is refused when the text is compiled, naming the expression: attribute access other
than those methods (`x.__class__`), other calls, lambdas, comprehensions, imports (not an
expression at all), names starting with `_`.

Per-turn semantics: arithmetic with a list operand is elementwise (`complexity * quality` multiplies
turn by turn; a scalar broadcasts), so a Deita score is `sum_t c_t * q_t` once the runner sums the list.
A comparison (`== != < <= > >=`) with a list operand holds when it holds for *every* turn:
`quality >= 4` means `min(quality) >= 4`; write `max(quality) >= 4` or `mean(quality) >= 4` for other
rules. `in`/`not in` keep Python's meaning (`5 in quality`: some turn equals 5). `sum` adds the turns in
order from 0, as Python's `sum` does; `mean` is that sum over the number of turns (NaN for none).

Nulls: a row whose referenced column is null (or a list containing a null) evaluates to `NULL`; a filter
counts it as failed (`null`), a score expression gives NaN (unscored).

Limits, checked before the work is done, so no expression runs unbounded in time or memory:

- an integer `*` or `**` whose result could pass `MAX_INT_BITS` (4096) bits is refused (`9**9**9`);
- a string or list built by `+` or `*` (repetition, concatenation; all turns of a per-turn result together,
  nested items counted) may hold at most `MAX_LENGTH` (100,000) characters/items (`'a' * 10**9`);
- a float overflow (`2.0 ** 10000`, or inf from finite operands) is an error, as is division by zero and a
  complex result (`(-8) ** 0.5`);
- `%` on a string (printf-style formatting) is refused; `sum` takes one list of numbers (no start value).

A part of the expression that reads no column is computed when the text is compiled, in Python, so a limit or
error there is reported then (`deita-train validate`); otherwise it fails on the row, naming the expression and
the row id (the first failing row, as a row-by-row evaluation would).

Evaluation is vectorized: `Expression.evaluate_columns(table)` computes every row of an Arrow table at once on
numpy arrays and Arrow compute kernels (strings; a per-turn value is its turns, flat, plus each row's offsets).
It follows the Python semantics above, with these differences, each an error rather than a silently different
value unless said otherwise:

- integers from columns are 64-bit: an integer result outside int64 is an error ("overflows a 64-bit integer"),
  as is a constant that does not fit, combined with a column; an integer `**` whose exponents are not all
  non-negative gives floats (equal values); an int/float comparison is made in float64 (as Python above 2**53);
- float `**` is numpy's `power` (it may differ from Python's in the last bit);
- a number's int/float type may differ where the value is equal: `min`/`max` of ints and floats, and a list literal
  of both, give floats; `sum` of no turns of floats is 0.0 (Python's `sum([])` is 0);
- `str.lower`/`upper` are Arrow's, with the rows holding a character Arrow maps differently (full case mappings
  like 'ß' -> 'SS', the final sigma) mapped by Python, so the results are Python's;
- a few valid Python operations are refused with "is not supported on columns": `min`/`max` of strings' characters
  or of lists, or over a per-turn list of strings; `in` with a string column searched in a string, or a per-turn
  list searched for; string method arguments that read a column, or start/end positions; a list literal of per-turn
  lists or of both strings and numbers; columns of types other than numbers, booleans, strings and lists of them.
"""

from deita_train.selection.expressions.compiler import Expression
from deita_train.selection.expressions.row_semantics import (
    ARITHMETIC,
    FUNCTIONS,
    MAX_INT_BITS,
    MAX_LENGTH,
    NULL,
    ROW_ERRORS,
    ExpressionError,
    arithmetic,
    describe,
    python_compare,
    python_method,
)
from deita_train.selection.expressions.values import INT64, NUMBERS

__all__ = [
    "ARITHMETIC",
    "FUNCTIONS",
    "INT64",
    "MAX_INT_BITS",
    "MAX_LENGTH",
    "NULL",
    "NUMBERS",
    "ROW_ERRORS",
    "Expression",
    "ExpressionError",
    "arithmetic",
    "describe",
    "python_compare",
    "python_method",
]
