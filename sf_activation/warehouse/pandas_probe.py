"""Keep pyarrow from importing pandas in a process that makes no pandas objects.

pyarrow imports pandas (0.3-0.5 s, a quarter of a no-op sync) the first time anything is
converted: `pa.array()`, `pa.scalar()` and every compute function given a Python value
first ask whether it is a pandas object, and the C++ type inference loads pandas' NaT,
Timestamp and Timedelta types. In a process where pandas has not been imported, no
pandas object exists, so "no pandas" is the true answer to both questions.
`skip_pandas_probe()` gives pyarrow that answer once, by letting its probes fail to
import pandas; a later `import pandas` still works, and pyarrow's own pandas entry points
(`to_pandas`, `from_pandas`) look again and find it.

One thing pyarrow does differently when it believes pandas absent: nanosecond timestamps
and durations become `datetime`/`timedelta` (or raise if not whole microseconds) instead
of `pd.Timestamp`/`pd.Timedelta` in `as_py()`/`to_pylist()`. Every source batch passes
through `Rebatcher`, which calls `restore_for(schema)`: a source with such a column
brings pandas back before any of its values are converted, so they convert as they did.

Only the CLI calls `skip_pandas_probe()`: a library user's process (Dagster) may well
build pandas objects later, and pyarrow keeps the first answer of its C++ probe.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa

_skipped = False


class _NoPandas:
    """A meta path finder that lets every import of pandas fail (while pyarrow probes)."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: object = None
    ) -> ModuleSpec | None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def skip_pandas_probe() -> bool:
    """Answer pyarrow's pandas probes with "absent"; False (nothing done) if pandas is
    already imported, when the probes cost nothing."""
    global _skipped
    if "pandas" in sys.modules:
        return False
    import pyarrow as pa

    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        # An untyped list: both probes, the "is it a pandas object?" one and the C++ type
        # inference's; each runs once per process and keeps its answer.
        pa.array([0])
    finally:
        sys.meta_path.remove(blocker)
    _skipped = "pandas" not in sys.modules
    return _skipped


def restore_for(schema: pa.Schema) -> None:
    """Import pandas for pyarrow if `schema` holds nanosecond temporal values (see above)."""
    global _skipped
    if not _skipped or not any(_has_nanoseconds(field.type) for field in schema):
        return
    import pyarrow as pa

    # Any pandas conversion makes pyarrow look for pandas again (now allowed to import it).
    pa.array([], pa.int64()).to_pandas()
    _skipped = False


def _has_nanoseconds(typ: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_timestamp(typ) or pa.types.is_duration(typ):
        return typ.unit == "ns"
    if pa.types.is_dictionary(typ):
        return _has_nanoseconds(typ.value_type)
    # Nested types (lists, structs, maps) convert their children the same way.
    return any(_has_nanoseconds(typ.field(i).type) for i in range(typ.num_fields))
