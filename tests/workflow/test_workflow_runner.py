"""The runner: stages in order, completion markers, reruns that do nothing, changes caught."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from volseg.errors import ConfigError
from volseg.io import open_volume
from volseg.workflow.runner import MARKER_DIR, run_workflow
from volseg.workflow.schema import load_workflow

WORKFLOW = """\
name: tiny
output_dir: out
synth: {kind: fibsem, shape: [16, 48, 40], seed: 3, chunks: [8, 32, 32]}
preview: {prediction: null, max_size: 64}
"""


def _workflow(tmp_path: Path, text: str = WORKFLOW, overrides: tuple[str, ...] = ()) -> object:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(text))
    return load_workflow(path, overrides)


def test_stages_run_in_order_and_record_completion(tmp_path: Path) -> None:
    outcomes = run_workflow(_workflow(tmp_path), base_dir=tmp_path)  # type: ignore[arg-type]
    assert [(o.name, o.status) for o in outcomes] == [("synth", "ran"), ("preview", "ran")]
    out = tmp_path / "out"
    image, meta = open_volume(out / "image.ome.zarr")
    assert image.shape == (16, 48, 40)
    record = meta.attrs["volseg"]
    assert record["workflow_yaml"].startswith("name: tiny")
    assert record["stage"] == "synth" and record["finished"] >= record["started"]
    assert record["versions"]["zarr"] and record["hardware"]["cpu_count"] >= 1
    assert "git_revision" in record
    assert (out / "preview" / "xz.png").exists()
    marker = json.loads((out / MARKER_DIR / "synth.json").read_text())
    assert marker["hash"] and marker["finished"] >= marker["started"]


def test_rerun_of_a_finished_workflow_does_no_work_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    wf = _workflow(tmp_path)
    run_workflow(wf, base_dir=tmp_path)  # type: ignore[arg-type]
    png = tmp_path / "out" / "preview" / "xy.png"
    before = png.stat().st_mtime_ns
    capsys.readouterr()
    outcomes = run_workflow(wf, base_dir=tmp_path)  # type: ignore[arg-type]
    assert all(o.status == "skipped" for o in outcomes)
    assert "nothing to do" in capsys.readouterr().err
    assert png.stat().st_mtime_ns == before


def test_a_changed_stage_is_refused_without_overwrite(tmp_path: Path) -> None:
    run_workflow(_workflow(tmp_path), base_dir=tmp_path)  # type: ignore[arg-type]
    changed = _workflow(tmp_path, overrides=("synth.seed=4",))
    with pytest.raises(ConfigError, match=r"'synth'.*changed.*--overwrite"):
        run_workflow(changed, base_dir=tmp_path)  # type: ignore[arg-type]
    # upstream changes invalidate downstream stages too
    with pytest.raises(ConfigError, match="changed"):
        run_workflow(changed, base_dir=tmp_path, only=["preview"])  # type: ignore[arg-type]
    outcomes = run_workflow(changed, base_dir=tmp_path, overwrite=True)  # type: ignore[arg-type]
    assert [o.status for o in outcomes] == ["ran", "ran"]


def test_an_interrupted_stage_is_rerun_while_finished_ones_are_skipped(tmp_path: Path) -> None:
    wf = _workflow(tmp_path)
    run_workflow(wf, base_dir=tmp_path)  # type: ignore[arg-type]
    (tmp_path / "out" / MARKER_DIR / "preview.json").unlink()  # as if killed during preview
    for png in (tmp_path / "out" / "preview").glob("*.png"):
        png.unlink()
    outcomes = run_workflow(wf, base_dir=tmp_path)  # type: ignore[arg-type]
    assert [(o.name, o.status) for o in outcomes] == [("synth", "skipped"), ("preview", "ran")]


def test_unknown_stage_selection_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--stages: train not in"):
        run_workflow(_workflow(tmp_path), base_dir=tmp_path, only=["train"])  # type: ignore[arg-type]


DECLARED = """\
name: declared
output_dir: out
synth: {kind: fibsem, shape: [8, 32, 32], seed: 3, chunks: [8, 32, 32]}
evaluate: {prediction: image.ome.zarr/labels/truth, truth: image.ome.zarr/labels/truth}
export: {input: image.ome.zarr/labels/truth, output: truth.tif}
"""


def test_a_stage_hash_covers_its_config_and_the_stages_it_reads_from(tmp_path: Path) -> None:
    from volseg.workflow.runner import stage_hashes, upstream

    wf = _workflow(tmp_path, DECLARED)
    assert upstream(wf) == {"synth": [], "evaluate": ["synth"], "export": ["synth"]}  # type: ignore[arg-type]
    run_workflow(wf, base_dir=tmp_path)  # type: ignore[arg-type]
    # editing evaluate leaves export (which runs after it but does not read it) alone
    edited = _workflow(tmp_path, DECLARED, overrides=("evaluate.zero_division=1",))
    before, after = stage_hashes(wf), stage_hashes(edited)  # type: ignore[arg-type]
    assert before["evaluate"] != after["evaluate"]
    assert before["export"] == after["export"] and before["synth"] == after["synth"]
    outcomes = run_workflow(edited, base_dir=tmp_path, only=["export"])  # type: ignore[arg-type]
    assert [(o.name, o.status) for o in outcomes] == [("export", "skipped")]
    with pytest.raises(ConfigError, match=r"'evaluate'.*changed"):
        run_workflow(edited, base_dir=tmp_path)  # type: ignore[arg-type]
    # editing synth reaches every stage that reads its products
    reseeded = _workflow(tmp_path, DECLARED, overrides=("synth.seed=4",))
    changed = stage_hashes(reseeded)  # type: ignore[arg-type]
    assert all(changed[name] != before[name] for name in before)
    with pytest.raises(ConfigError, match=r"'export'.*changed"):
        run_workflow(reseeded, base_dir=tmp_path, only=["export"])  # type: ignore[arg-type]
