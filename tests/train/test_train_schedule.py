"""How training ends and schedules its learning rate: a budget fits the cosine schedule,
every end says why, and the same seed gives the same numbers on a busy machine."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_cli import CONFIG, _volume

from volseg.cli import main
from volseg.models import read_spec
from volseg.train.config import OptimizerConfig
from volseg.train.loop import cosine_rate, fit


def _toy() -> tuple[torch.nn.Module, object, object]:
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 1)
    x = torch.randn(2, 1, 4, 4)
    y = (x[:, 0] > 0).long()

    def objective(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(m(xb), yb)

    return net, (lambda: (x, y)), objective


def test_cosine_rate_is_torchs_cosine_annealing() -> None:
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=1e-4)
    for epoch in range(1, 9):
        assert cosine_rate(0.01, 1e-4, (epoch - 1) / 7) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()
    assert cosine_rate(0.01, 1e-4, 1.7) == 1e-4 and cosine_rate(0.01, 1e-4, -1) == 0.01


def test_a_time_budget_anneals_the_cosine_schedule_within_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    """400 epochs planned, time for at most 50: the rate still reaches its minimum."""
    net, batch, objective = _toy()

    def slow_batch() -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(0.02)
        return batch()  # type: ignore[operator,no-any-return]

    lr, min_lr = 0.01, 1e-5
    budget_min = 4.0 / 60  # 4 s; an epoch ~0.1-0.2 s
    result = fit(net, next_batch=slow_batch, objective=objective, validate=None,  # type: ignore[arg-type]
                 select="macro_f1", epochs=400, steps_per_epoch=4,
                 optimizer=OptimizerConfig(lr=lr, min_lr=min_lr, scheduler="cosine"),
                 max_minutes=budget_min, progress=False)
    assert result.stopped == "time_budget" and result.schedule == (
        "cosine annealed on the time budget")
    rates = [r["lr"] for r in result.history]
    assert 2 <= len(rates) <= 50  # each epoch sleeps 4 x 0.02 s
    assert all(b <= a for a, b in itertools.pairwise(rates))
    # the cut schedule (cosine over the 400 planned epochs) would still be near lr here
    assert cosine_rate(lr, min_lr, len(rates) / 400) > 0.9 * lr
    # the fitted one ends annealed: its last step began within one step of the budget
    assert rates[-1] < 0.05 * lr
    err = capsys.readouterr().err
    assert f"stopped after epoch {len(rates)}/400: time budget (max_minutes) reached" in err
    assert "learning rate: cosine annealed on the time budget" in err


def test_without_a_budget_the_cosine_runs_over_the_epochs(
        capsys: pytest.CaptureFixture[str]) -> None:
    net, batch, objective = _toy()
    result = fit(net, next_batch=batch, objective=objective, validate=None,  # type: ignore[arg-type]
                 select="macro_f1", epochs=5, steps_per_epoch=2,
                 optimizer=OptimizerConfig(lr=0.01, min_lr=0.0, scheduler="cosine"),
                 progress=False)
    assert result.stopped == "epochs" and result.schedule == "cosine over epochs"
    assert [r["lr"] for r in result.history] == pytest.approx(
        [0.01 * (1 + math.cos(math.pi * (e - 1) / 5)) / 2 for e in range(1, 6)])
    assert "stopped after epoch 5/5: all epochs done" in capsys.readouterr().err
    # a budget that does not bind gives the same schedule
    net, batch, objective = _toy()
    timed = fit(net, next_batch=batch, objective=objective, validate=None,  # type: ignore[arg-type]
                select="macro_f1", epochs=5, steps_per_epoch=2,
                optimizer=OptimizerConfig(lr=0.01, min_lr=0.0, scheduler="cosine"),
                max_minutes=60, progress=False)
    assert timed.stopped == "epochs"
    assert [r["lr"] for r in timed.history] == pytest.approx(
        [r["lr"] for r in result.history], rel=1e-4)


def _burn(seconds: float) -> list[subprocess.Popen[bytes]]:
    """Two busy processes (one per core of the test machine), for ``seconds`` at most."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]


def test_same_seed_same_numbers_beside_a_cpu_loading_process(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's promise, shrunk: a fixed number of steps gives identical metrics
    whether the machine is quiet or busy."""
    image, labels, _, _ = _volume(tmp_path, sparse=True)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(CONFIG.format(image=image, labels=labels).replace(
        "split: {validation: [[12, 16]], gap: 2}",
        "split: {mode: slices, gap: 2, slab: 2}").replace("epochs: 2", "epochs: 3"))
    records = []
    for run, load in (("quiet", False), ("busy", True)):
        burners = _burn(120) if load else []
        try:
            assert main(["train", str(cfg), "-o", str(tmp_path / run)]) == 0
        finally:
            for p in burners:
                p.kill()
                p.wait()
        training = read_spec(tmp_path / run / "model.safetensors").training
        records.append(training)
        assert training["stopped"] == "epochs" and training["lr_schedule"] == "plateau"
        assert "stopped after epoch 3/3: all epochs done" in capsys.readouterr().err
    quiet, busy = records
    assert quiet["best_metrics"] == busy["best_metrics"]
    assert quiet["confusion"] == busy["confusion"] and quiet["best_epoch"] == busy["best_epoch"]
    curves = [(tmp_path / run / "training" / "metrics.csv").read_text().splitlines()
              for run in ("quiet", "busy")]
    strip = [[",".join(line.split(",")[:-1]) for line in c] for c in curves]  # no seconds
    assert "seconds" in curves[0][0].split(",")[-1]
    assert strip[0] == strip[1]
    assert json.dumps(quiet["best_metrics"], sort_keys=True)  # a real record
