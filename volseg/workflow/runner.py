"""Run a validated workflow: stages in order, on one Dask client, resumable.

Completion is tracked at two levels:

* **blocks** — stages write through :func:`volseg.io.store.store_blocks`, which marks
  every finished block; an interrupted stage resumes where it stopped;
* **stages** — a finished stage leaves ``<output_dir>/.volseg/stages/<name>.json`` with a
  hash of its config and of the hashes of the stages it reads from (those whose
  declared products it reads, :meth:`volseg.workflow.stage.StageConfig.reads`), so a
  rerun skips it, while a change to it or to anything upstream of it is detected and
  reported; editing a stage leaves the stages that do not read from it alone.

A rerun of a finished workflow does no work and says so.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from volseg.cluster import dask_client
from volseg.errors import ConfigError
from volseg.io.location import Location, check_writable
from volseg.io.stamp import stamp_finished
from volseg.provenance import now, provenance
from volseg.workflow.schema import Workflow
from volseg.workflow.stage import RunContext

MARKER_DIR = Path(".volseg") / "stages"


@dataclass
class StageOutcome:
    """What happened to one stage in a run."""

    name: str
    status: str  # "ran" | "skipped"
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)


def _covers(product: str, path: str) -> bool:
    """Whether ``path`` is the product ``product`` or lies inside it."""
    a, b = PurePosixPath(product), PurePosixPath(path)
    return a == b or a in b.parents


def upstream(workflow: Workflow) -> dict[str, list[str]]:
    """Return, for each stage, the earlier stages it reads from.

    A stage reads from an earlier one when one of its declared inputs is (or lies
    inside) one of that stage's declared products; a stage that declares no inputs
    (``reads()`` is ``None``) reads from every earlier stage.
    """
    out: dict[str, list[str]] = {}
    earlier: list[tuple[str, tuple[str, ...]]] = []
    for module, config in workflow.stages():
        reads = config.reads()
        if reads is None:
            out[module.NAME] = [name for name, _ in earlier]
        else:
            wanted = [str(PurePosixPath(r)) for r in reads]
            out[module.NAME] = [name for name, products in earlier
                                if any(_covers(p, r) for p in products for r in wanted)]
        earlier.append((module.NAME, tuple(str(PurePosixPath(w)) for w in config.writes())))
    return out


def stage_hashes(workflow: Workflow) -> dict[str, str]:
    """Return each stage's resume hash: its own config and the hashes of its upstream stages.

    So the hash of a stage changes when its config changes or when a stage it reads
    from (directly or through others) changes, and only then.
    """
    hashes: dict[str, str] = {}
    sources = upstream(workflow)
    for module, config in workflow.stages():
        text = json.dumps(config.to_dict(), sort_keys=True)
        parents = "|".join(hashes[name] for name in sources[module.NAME])
        hashes[module.NAME] = hashlib.sha256(
            f"{parents}|{module.NAME}|{text}".encode()).hexdigest()
    return hashes


def _read_marker(path: Location) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_workflow(
    workflow: Workflow,
    *,
    base_dir: Path | None = None,
    overwrite: bool = False,
    only: Sequence[str] | None = None,
) -> list[StageOutcome]:
    """Run the stages of ``workflow`` that are not complete yet.

    Parameters
    ----------
    workflow
        A workflow from :func:`volseg.workflow.schema.load_workflow`.
    base_dir
        Directory relative paths resolve against (default: the current directory).
    overwrite
        Recompute every selected stage and replace its outputs.
    only
        Run only these stages (by name); the others must be complete already if needed.

    Returns
    -------
    list of StageOutcome
        One entry per selected stage, ``status`` "ran" or "skipped".

    Raises
    ------
    ConfigError
        When a stage completed earlier with a different configuration (or a stage it
        reads from did) and ``overwrite`` is not set.
    """
    base_dir = (base_dir or Path.cwd()).resolve()
    workdir = workflow.output_dir(base_dir)
    hashes = stage_hashes(workflow)
    selected = [(m, c) for m, c in workflow.stages() if only is None or m.NAME in only]
    unknown = set(only or ()) - {m.NAME for m, _ in workflow.stages()}
    if unknown:
        raise ConfigError(
            f"--stages: {', '.join(sorted(unknown))} not in {workflow.source}; "
            f"choose from {', '.join(m.NAME for m, _ in workflow.stages())}"
        )
    marker_dir = workdir / MARKER_DIR.as_posix()

    pending = []
    for module, _config in selected:
        marker = _read_marker(marker_dir / f"{module.NAME}.json")
        if marker is not None and not overwrite and marker.get("hash") != hashes[module.NAME]:
            raise ConfigError(
                f"{workflow.source}: stage '{module.NAME}' (or a stage it reads from) changed "
                f"since it completed in {workdir}; pass --overwrite to recompute, or use a new "
                f"output_dir"
            )
        if overwrite or marker is None:
            pending.append(module.NAME)

    if not pending:
        _log(
            f"volseg: nothing to do — all {len(selected)} stages of '{workflow.name}' are "
            f"complete in {workdir} (pass --overwrite to recompute)"
        )
        return [StageOutcome(m.NAME, "skipped") for m, _ in selected]

    if isinstance(workdir, Path):  # a bucket has no folders to make
        marker_dir.mkdir(parents=True, exist_ok=True)
    else:
        check_writable(workdir)
    record = provenance(command=f"volseg run {workflow.source}", config=workflow.raw)
    record["workflow_yaml"] = workflow.source.read_text()
    record["workflow_file"] = str(workflow.source)

    outcomes: list[StageOutcome] = []
    log_root = workdir / ".volseg" if isinstance(workdir, Path) else base_dir / ".volseg"
    with dask_client(workflow.config.cluster, log_root=log_root) as client:
        for module, config in selected:
            if module.NAME not in pending:
                _log(f"volseg: stage {module.NAME}: complete, skipped")
                outcomes.append(StageOutcome(module.NAME, "skipped"))
                continue
            _log(f"volseg: stage {module.NAME}: running")
            started = now()
            stage_record = dict(record, stage=module.NAME, stage_config=config.to_dict(),
                                started=started)
            ctx = RunContext(workdir=workdir, base_dir=base_dir, overwrite=overwrite,
                             provenance=stage_record, client=client,
                             storage_options=workflow.config.storage_options)
            t0 = time.perf_counter()
            summary = module.run(config, ctx) or {}
            seconds = time.perf_counter() - t0
            finished = now()
            stamp_finished(workdir, stage=module.NAME, started=started, finished=finished)
            marker = {"hash": hashes[module.NAME], "started": started, "finished": finished,
                      "seconds": round(seconds, 3), "summary": summary}
            (marker_dir / f"{module.NAME}.json").write_text(
                json.dumps(marker, indent=2, default=str)
            )
            _log(f"volseg: stage {module.NAME}: done in {seconds:.1f} s")
            outcomes.append(StageOutcome(module.NAME, "ran", seconds, summary))
    return outcomes
