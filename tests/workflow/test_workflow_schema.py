"""The workflow schema: strict keys, typed values, errors naming file, line and key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from volseg.cli import main
from volseg.cluster import LocalProcessCluster, SlurmCluster, ThreadsCluster
from volseg.errors import ConfigError
from volseg.workflow.schema import load_workflow, parse_override, stage_modules

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_every_stage_is_discovered_in_pipeline_order() -> None:
    names = [m.NAME for m in stage_modules()]
    orders = [m.ORDER for m in stage_modules()]
    assert orders == sorted(orders)
    assert "preview" in names


def test_minimal_workflow_defaults_to_the_threaded_scheduler(tmp_path: Path) -> None:
    wf = load_workflow(_write(tmp_path, "name: tiny\n"))
    assert wf.name == "tiny"
    assert isinstance(wf.config.cluster, ThreadsCluster)  # type: ignore[attr-defined]
    assert wf.stages() == []
    assert wf.output_dir(tmp_path) == tmp_path / "runs" / "tiny"


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        name: tiny
        cluster:
          type: local
          n_wrokers: 3
        """)
    with pytest.raises(ConfigError) as info:
        load_workflow(path)
    message = str(info.value)
    assert f"{path}:4" in message and "cluster.n_wrokers" in message
    assert "unknown key" in message and "\n" not in message


def test_wrong_type_names_the_key_and_the_value(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        name: tiny
        cluster:
          type: local
          n_workers: many
        """)
    with pytest.raises(ConfigError, match=r"wf\.yaml:4: cluster\.n_workers: .*'many'"):
        load_workflow(path)


def test_unknown_stage_is_an_unknown_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: tiny\npredcit: {}\n")
    with pytest.raises(ConfigError, match=r"wf\.yaml:2: predcit: unknown key"):
        load_workflow(path)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_workflow(path)
    with pytest.raises(ConfigError, match="not found"):
        load_workflow(tmp_path / "absent.yaml")


def test_yaml_tags_that_would_run_code_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_workflow(path)


def test_cluster_kinds_are_discriminated_by_type(tmp_path: Path) -> None:
    wf = load_workflow(_write(tmp_path, """\
        name: big
        cluster: {type: slurm, queue: gpu, gpus_per_job: 1, adaptive: {maximum: 8}}
        """))
    cluster = wf.config.cluster  # type: ignore[attr-defined]
    assert isinstance(cluster, SlurmCluster) and cluster.adaptive.maximum == 8
    with pytest.raises(ConfigError, match="cluster"):
        load_workflow(_write(tmp_path, "name: x\ncluster: {type: kubernetes}\n"))


def test_overrides_are_typed_and_validated_like_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: tiny\ncluster: {type: local}\n")
    wf = load_workflow(path, ["cluster.n_workers=3", "name=renamed"])
    cluster = wf.config.cluster  # type: ignore[attr-defined]
    assert isinstance(cluster, LocalProcessCluster) and cluster.n_workers == 3
    assert wf.name == "renamed"
    with pytest.raises(ConfigError, match=r"--set cluster\.n_workers"):
        load_workflow(path, ["cluster.n_workers=lots"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_workflow(path, ["cluster.bogus=1"])
    assert parse_override("predict.patch_size=[32, 64, 64]") == (
        ["predict", "patch_size"], [32, 64, 64])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("predict.batch_size")


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "workflows").glob("*.yaml")))
def test_shipped_workflows_validate(name: str) -> None:
    load_workflow(ROOT / "workflows" / name)


def test_cli_reports_config_errors_in_one_line_with_status_2(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: tiny\nbogus: 1\n")
    assert main(["run", str(path)]) == 2
    proc = subprocess.run(
        [sys.executable, "-m", "volseg", "run", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "bogus: unknown key" in proc.stderr


def test_check_prints_the_resolved_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path, "name: tiny\n")
    assert main(["run", str(path), "--check", "--set", "cluster.type=local"]) == 0
    assert '"type": "local"' in capsys.readouterr().out


def test_output_section_sets_every_writing_stage_unless_it_says_otherwise(
    tmp_path: Path,
) -> None:
    wf = load_workflow(_write(tmp_path, """\
        name: formats
        output: {ngff: "0.4", chunks: [32, 32, 32]}
        synth: {kind: fibsem, shape: [16, 64, 64]}
        predict: {}
        crf: {ngff: "0.5"}
        instances: {classes: [2], chunks: [16, 64, 64]}
        evaluate: {}
        """))
    config = wf.config
    assert (config.synth.ngff, config.synth.chunks) == ("0.4", (32, 32, 32))  # type: ignore[attr-defined]
    assert (config.predict.ngff, config.predict.chunks) == ("0.4", (32, 32, 32))  # type: ignore[attr-defined]
    assert (config.crf.ngff, config.crf.chunks) == ("0.5", (32, 32, 32))  # type: ignore[attr-defined]
    assert (config.instances.ngff, config.instances.chunks) == ("0.4", (16, 64, 64))  # type: ignore[attr-defined]
    assert not hasattr(config.evaluate, "ngff")  # type: ignore[attr-defined]
    plain = load_workflow(_write(tmp_path, "name: plain\npredict: {}\n")).config
    assert (plain.predict.ngff, plain.predict.chunks) == ("0.5", None)  # type: ignore[attr-defined]
    override = load_workflow(_write(tmp_path, "name: o\npredict: {}\n"), ["output.ngff=0.4"])
    assert override.config.predict.ngff == "0.4"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"output\.ngff"):
        load_workflow(_write(tmp_path, "name: bad\noutput: {ngff: '0.3'}\n"))
