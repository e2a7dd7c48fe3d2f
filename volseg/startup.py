"""Start-up of command-line processes: dask without its optional xarray hook.

``import dask.array`` imports ``xarray`` when it is installed (dask checks for
xarray objects in a few of its functions), and xarray imports pandas: about a tenth
of the import time of ``volseg predict`` (0.3-0.9 s on a 2-core machine), for types
volseg never hands to dask.  A command-line process therefore imports
``dask.array`` with ``xarray`` hidden; the hiding ends right after, so a later
``import xarray`` (e.g. by a bioimage.io library) works as usual.  Library users are
unaffected: only :func:`volseg.cli.main` of a process of its own calls this.
"""

from __future__ import annotations

import sys

__all__ = ["import_dask_without_xarray"]


def import_dask_without_xarray() -> bool:
    """Import ``dask.array`` with ``xarray`` hidden, unless either is already imported.

    Returns
    -------
    bool
        Whether dask was imported this way.
    """
    if "dask.array" in sys.modules or "xarray" in sys.modules:
        return False
    sys.modules["xarray"] = None  # type: ignore[assignment]  # "import xarray" fails
    try:
        import dask.array  # noqa: F401
    finally:
        if sys.modules.get("xarray", 0) is None:
            del sys.modules["xarray"]
    return True
