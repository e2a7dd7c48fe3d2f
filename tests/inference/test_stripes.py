"""The stripes of a barely trained micrograph model (#17): where they come from.

A shrunk ``workflows/micrograph.yaml`` run (2 epochs of 2 steps) predicted contamination
probabilities whose row means alternate (here 151, 137, 150, 123, 149, 118, ...: a
period-2 amplitude of 30 grey levels of 255; columns alternate too).  Diagnosis: the
network, not the blending nor the 2-D path (k = 1 sections).  The default UNet
upsamples with a ``ConvTranspose2d(kernel 3, stride 2)``, whose kernel covers odd
output pixels twice per axis and even ones once (the checkerboard of Odena et al.,
*Deconvolution and Checkerboard Artifacts*, Distill 2016); fed a constant image, the
2-epoch model answers with the same stripes (33 grey levels), so they are its own.
Training reduces them (here by 3x in 64 steps on a toy task); the shrunk run with 12
epochs of 8 steps still had 17 grey levels, so a short run shows them.  The lasting
cure is resize-then-convolve upsampling (or a stride-divisible kernel) in the UNet,
an architecture change (new weights) not made here.  These tests show each part.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.nets import UNet
from torch import nn

from volseg.inference import Network, PredictOptions, predict_logits
from volseg.train.config import OptimizerConfig
from volseg.train.loop import fit


def period2(image: np.ndarray) -> float:
    """Mean |difference| of the means of even and odd rows (the stripes' amplitude)."""
    rows = np.asarray(image, dtype=np.float64).mean(axis=-1)
    n = rows.shape[-1] // 2 * 2
    return float(np.abs(rows[..., 0:n:2] - rows[..., 1:n:2]).mean())


class TimesTwo(nn.Module):
    """A per-pixel 2-D "network" with two output channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([2 * x, -x], dim=1)


def test_the_blending_and_the_2d_path_add_no_stripes() -> None:
    """Per-pixel model on a micrograph stack (k = 1): the image comes back exactly."""
    image = np.random.default_rng(0).normal(size=(6, 96, 96)).astype(np.float32)
    out = predict_logits(image, TimesTwo(), PredictOptions(
        patch_size=(1, 64, 64), overlap=0.25, block_size=(2, 96, 96), device="cpu"),
        network=Network(kind="2.5d", context=1)).compute()
    np.testing.assert_allclose(out[0], 2 * image, rtol=1e-6, atol=1e-6)
    flat = predict_logits(np.ones((2, 96, 96), np.float32), TimesTwo(), PredictOptions(
        patch_size=(1, 64, 64), overlap=0.25, device="cpu"),
        network=Network(kind="2.5d", context=1)).compute()
    assert period2(flat[0]) < 1e-6


def _blobs(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark discs on a noisy bright background, and their masks (contamination)."""
    yy, xx = np.mgrid[:64, :64]
    xs, ys = [], []
    for _ in range(n):
        mask = np.zeros((64, 64), bool)
        for cy, cx, r in rng.uniform((0, 0, 5), (64, 64, 12), size=(3, 3)):
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        xs.append(np.where(mask, -1.0, 1.0) + rng.normal(0, 0.3, (64, 64)))
        ys.append(mask)
    x = torch.from_numpy(np.stack(xs)[:, None].astype(np.float32))
    return x, torch.from_numpy(np.stack(ys).astype(np.int64))


def test_the_network_makes_the_stripes_and_training_removes_them() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    net = UNet(2, 1, 2, channels=(8, 16), strides=(2,), num_res_units=0)
    (up,) = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert up.kernel_size == (3, 3) and up.stride == (2, 2)  # the checkerboard's cause
    rng = np.random.default_rng(0)
    test_x, test_y = _blobs(np.random.default_rng(99), 4)
    truth_stripes = period2(test_y.numpy().astype(np.float32))

    def stripes() -> float:
        net.eval()
        with torch.no_grad():
            prob = torch.softmax(net(test_x), 1)[:, 1].numpy()
        net.train()
        return period2(prob) / max(truth_stripes, 1e-3)  # relative to the truth's own

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        return _blobs(rng, 2)

    def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(m(x), y)

    kw = dict(next_batch=batch, objective=loss, validate=None, select="loss",
              optimizer=OptimizerConfig(lr=3e-3, scheduler="none"), progress=False)
    fit(net, epochs=1, steps_per_epoch=4, **kw)  # type: ignore[arg-type]
    early = stripes()
    fit(net, epochs=1, steps_per_epoch=60, **kw)  # type: ignore[arg-type]
    late = stripes()
    print(f"stripes: {early:.2f} after 4 steps, {late:.2f} after 64 (x the truth)")
    assert early > 2 * late, (early, late)
