"""The ``volseg`` command line: a thin dispatcher over one module per sub-command.

Each module in this package (other than this one and ``_common``) is a sub-command
and defines::

    NAME: str                      # the sub-command, e.g. "convert"
    HELP: str                      # one line for ``volseg --help``
    ORDER: int                     # position in the help listing
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...   # the exit status

Sub-commands are discovered, so adding a command means adding a module named after
the command.  ``volseg COMMAND ...`` imports only that command's module (start-up
stays short: the heavy libraries are imported by the commands that use them);
``volseg --help`` imports them all for their one-line help, so a command module and
the options module it reads its flags from import no heavy library (torch, dask, zarr,
MONAI) at module level; the packages export their names lazily (:mod:`volseg.lazy`).
``tests/cli/test_cli_startup.py`` checks it on ``sys.modules``.  A
:class:`volseg.errors.VolsegError` is printed as one line (``volseg: error: ...``) and
exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn, Protocol, runtime_checkable

from volseg import __version__
from volseg.errors import EXIT_USAGE, VolsegError, describe_os_error


def _command_names() -> list[str]:
    return [info.name for info in pkgutil.iter_modules(__path__)
            if not info.name.startswith("_")]


def _requested_command(argv: Sequence[str]) -> str | None:
    """Return the sub-command named by ``argv`` (its first non-option word), if any."""
    names = set(_command_names())
    for word in argv:
        if not word.startswith("-"):
            module = word.replace("-", "_")  # `export-model` lives in export_model.py
            return module if module in names else None
    return None


@runtime_checkable
class Command(Protocol):
    """A sub-command module (see the module notes)."""

    NAME: str
    HELP: str
    ORDER: int

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's arguments."""

    def run(self, args: argparse.Namespace) -> int:
        """Run the command; return the exit status."""


def _command_modules(only: str | None = None) -> list[Command]:
    modules: list[Command] = []
    for name in [only] if only else _command_names():
        module = importlib.import_module(f"{__name__}.{name}")
        if isinstance(module, Command):
            modules.append(module)
    return sorted(modules, key=lambda m: (m.ORDER, m.NAME))


class _Parser(argparse.ArgumentParser):
    """Argument errors exit with status 2 and one line, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"volseg: error: {message} (see `{self.prog} --help`)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Return the top-level parser with one sub-parser per command module.

    Parameters
    ----------
    only
        Import and add only this command (its module name); ``None``: all of them.
    """
    parser = _Parser(
        prog="volseg",
        description="Blockwise segmentation of very large 3D electron-microscopy volumes.",
    )
    parser.add_argument("--version", action="version", version=f"volseg {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    parser.add_argument(
        "--allow-missing-chunks", action="store_true",
        help="read chunks missing from a Zarr input as its fill value (default: an error)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _command_modules(only):
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show full tracebacks instead of one-line errors")
        cmd.add_argument("--allow-missing-chunks", action="store_true",
                         default=argparse.SUPPRESS,
                         help="read chunks missing from a Zarr input as its fill value "
                              "(default: a missing chunk is an error)")
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``volseg`` console script; returns the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words == ["--version"]:  # answered before any command module is imported
        print(f"volseg {__version__}")
        return 0
    if argv is None:  # a command-line process of its own: block-friendly allocator
        from volseg.allocator import tune_for_blocks

        tune_for_blocks()
    parser = build_parser(_requested_command(words))
    args = parser.parse_args(words)
    args._argv = words  # the command line as given, for the outputs' provenance
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    if argv is None:  # the heavy imports of the command, without dask's xarray hook
        from volseg.startup import import_dask_without_xarray

        import_dask_without_xarray()
    try:
        if getattr(args, "allow_missing_chunks", False):
            from volseg.io.chunks import allow_missing_chunks

            with allow_missing_chunks():
                status = int(args._run(args) or 0)
        else:
            status = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe (`| head`) fails here, not at exit
        return status
    except VolsegError as exc:
        if args.debug:
            raise
        print(f"volseg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        _drop_stdout()
        if args.debug:
            raise
        print("volseg: error: the output was closed before everything was written (broken "
              "pipe); read the whole output, e.g. into a file instead of `| head`",
              file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if args.debug:
            raise
        print(f"volseg: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("volseg: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _drop_stdout() -> None:
    """Point stdout at the null device, so that flushing it at exit does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
