"""Writing and reading the per-object table (CSV always; Parquet when pyarrow is present)."""

from __future__ import annotations

import csv
import importlib.util
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from volseg.errors import InputError, OutputExistsError
from volseg.instances.blockwise import TABLE_COLUMNS, ObjectTable
from volseg.io.location import Location, PathLike, as_path

__all__ = ["has_parquet", "read_table", "write_table"]

_INT_COLUMNS = frozenset(TABLE_COLUMNS) - {"centroid_z_nm", "centroid_y_nm", "centroid_x_nm"}


def has_parquet() -> bool:
    """Whether Parquet output is available (``pyarrow`` installed; not a dependency)."""
    return importlib.util.find_spec("pyarrow") is not None


def write_table(table: ObjectTable, path: PathLike, *, overwrite: bool = False) -> Location:
    """Write the object table as CSV (``.csv``) or Parquet (``.parquet``, needs pyarrow).

    Centroids are written with ``repr`` precision (round-trip exact). The file is
    written to a temporary name and renamed, so it is complete or absent.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    InputError
        If Parquet is asked for without pyarrow, or the suffix is unknown.
    """
    path = as_path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    suffix = path.suffix.lower()
    cols = table.columns()
    buffer = io.BytesIO()
    if suffix == ".parquet":
        if not has_parquet():
            raise InputError(
                f"{path}: Parquet needs pyarrow (pip install pyarrow); or use a .csv table"
            )
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({k: np.asarray(v) for k, v in cols.items()}), buffer)
    elif suffix == ".csv":
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(TABLE_COLUMNS)
        data = [cols[c].tolist() for c in TABLE_COLUMNS]
        for row in zip(*data, strict=True):
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
        buffer.write(text.getvalue().encode())
    else:
        raise InputError(f"{path}: the object table must end in .csv or .parquet")
    if not isinstance(path, Path):  # an object is written whole or not at all
        path.write_bytes(buffer.getvalue())
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path


def read_table(path: str | Path) -> dict[str, npt.NDArray[Any]]:
    """Read a table written by :func:`write_table` into numpy columns."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such object table")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(path)
        return {c: t.column(c).to_numpy() for c in t.column_names}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty object table")
        rows = list(reader)
    out: dict[str, npt.NDArray[Any]] = {}
    for i, name in enumerate(header):
        values = [r[i] for r in rows]
        if name in _INT_COLUMNS:
            out[name] = np.array(values, dtype=np.int64)
        else:
            out[name] = np.array(values, dtype=np.float64)
    return out
