"""What every workflow stage shares: the :class:`Stage` protocol, its config base and context.

A stage is a module ``volseg/stages/<name>.py`` that satisfies :class:`Stage`::

    NAME = "predict"            # the top-level key in the workflow YAML
    ORDER = 40                  # stages run in increasing ORDER
    class Config(PredictOptions, StageConfig):   # the operation's options + paths
        def reads(self): return (self.model, self.input)
        def writes(self): return (self.output,)
    def run(config: Config, ctx: RunContext) -> dict[str, object]: ...
        # resolves the paths, calls the library, returns a small JSON-able summary
        # that the runner prints and records.

The config of a stage *is* its operation's options object (a subclass that adds the
paths the stage reads and writes), so the YAML section, the command's flags and the
library call share one schema.  :meth:`StageConfig.reads` and :meth:`StageConfig.writes`
declare the products a stage consumes and makes: a finished stage is redone only
when its own config or a stage it reads from changed
(:func:`volseg.workflow.runner.stage_hashes`).

Stages are discovered from the ``volseg.stages`` package, so adding a stage means
adding a module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from volseg.io.location import Location, as_path, require_local, scheme_of
from volseg.options import Options

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["Location", "RunContext", "Stage", "StageConfig", "locate", "options_for"]

StorageOptions = Mapping[str, Mapping[str, Any]]
"""fsspec file-system options per URL scheme or URL prefix (the workflow's
``storage_options``)."""


def options_for(path: str | Path | Location, storage_options: StorageOptions | None
                ) -> dict[str, Any]:
    """Return the storage options of a URL: its scheme's, then those of every URL prefix
    it starts with (longer prefixes win), e.g. ``{"s3": {...}, "s3://public-bucket":
    {"anon": True}}``."""
    scheme = scheme_of(path)
    if not scheme or not storage_options:
        return {}
    text = str(path)
    options = dict(storage_options.get(scheme, {}))
    prefixes = sorted((k for k in storage_options if "://" in k), key=len)
    for prefix in prefixes:
        if text == prefix or text.startswith(prefix.rstrip("/") + "/"):
            options.update(storage_options[prefix])
    return options


def locate(path: str | Path | Location, storage_options: StorageOptions | None = None
           ) -> Location:
    """Return ``path`` as a location, a URL with its storage options (:func:`options_for`)."""
    return as_path(path, storage_options=options_for(path, storage_options))


class StageConfig(Options):
    """Base of every stage config: strict, frozen, and declaring what it reads and writes."""

    def reads(self) -> tuple[str, ...] | None:
        """Return the paths (workflow products or external files) this stage reads.

        ``None`` (the default) means "undeclared": the stage is then taken to depend on
        every stage before it.
        """
        return None

    def writes(self) -> tuple[str, ...]:
        """Return the product paths this stage writes (relative to the workflow directory)."""
        return ()


@runtime_checkable
class Stage(Protocol):
    """A workflow stage module (see the module notes)."""

    NAME: str
    ORDER: int
    Config: type[StageConfig]

    def run(self, config: Any, ctx: RunContext) -> dict[str, Any]:
        """Do the work (resuming where it can); return a JSON-able summary."""


@dataclass(frozen=True)
class RunContext:
    """Where a stage reads and writes, and how it computes.

    Attributes
    ----------
    workdir
        The workflow's output directory (a folder, or a URL such as ``s3://bucket/run``);
        products of stages live here.
    base_dir
        Directory that relative paths to *external* inputs resolve against (the
        current directory when the workflow was started).
    overwrite
        Replace existing outputs instead of resuming / refusing.
    provenance
        Workflow YAML, versions, git revision, hardware: recorded in every output group.
    client
        A ``distributed.Client`` when the workflow runs on a cluster, else ``None``
        (the local threaded scheduler is used).
    storage_options
        fsspec options per URL scheme, given to every URL the stages open.
    """

    workdir: Location
    base_dir: Path = field(default_factory=Path.cwd)
    overwrite: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)
    client: Client | None = None
    storage_options: StorageOptions = field(default_factory=dict)

    def path(self, p: str | Path) -> Location:
        """Resolve a product path: relative paths live in :attr:`workdir`, URLs are kept."""
        loc = locate(p, self.storage_options)
        if not isinstance(loc, Path) or loc.is_absolute():
            return loc
        return self.workdir / loc.as_posix()

    def resolve(self, p: str | Path) -> Location:
        """Resolve an input that may be a product or an external file (the one rule).

        A product of the workflow (in :attr:`workdir`) wins if it exists, then an
        existing external path (from :attr:`base_dir`); otherwise the product path,
        so that a later error names where the product was expected.
        """
        product = self.path(p)
        if product.exists():
            return product
        external = self.external(p)
        return external if external.exists() else product

    def external(self, p: str | Path) -> Location:
        """Resolve an external input path: relative paths are taken from :attr:`base_dir`."""
        loc = locate(p, self.storage_options)
        return loc if not isinstance(loc, Path) or loc.is_absolute() else self.base_dir / loc

    def local(self, location: Location, what: str) -> Path:
        """Return a resolved path that must be local (a model file, PNGs), or raise
        a one-line :class:`~volseg.errors.InputError` naming ``what``."""
        return require_local(location, what)

    def attrs(self, stage: str, config: StageConfig) -> dict[str, Any]:
        """Return output-group attributes: the run's provenance, the stage and its config."""
        return {"volseg": {**self.provenance, "stage": stage, "config": config.to_dict()}}
