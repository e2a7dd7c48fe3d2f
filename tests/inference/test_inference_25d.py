"""2.5-D networks: k neighbouring sections as channels, z-context through the halo reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from torch import nn

from volseg.errors import ConfigError
from volseg.inference import Network, PredictOptions, predict_logits

SHAPE = (6, 20, 13)  # x shorter than the patch: padded as MONAI pads


def reference(volume: np.ndarray, net: nn.Module, k: int, patch: tuple[int, int],
              overlap: float) -> np.ndarray:
    """MONAI's 2-D sliding window on every section, fed the k-section stack (mirrored)."""
    h = k // 2
    padded = np.pad(volume, [(h, h), (0, 0), (0, 0)], mode="reflect")
    out = []
    with torch.no_grad():
        for z in range(volume.shape[0]):
            stack = torch.from_numpy(np.ascontiguousarray(padded[z:z + k]))[None]
            res = sliding_window_inference(stack, patch, 2, net, overlap=overlap,
                                           mode="gaussian", sigma_scale=0.125)
            assert isinstance(res, torch.Tensor)
            out.append(res[0].numpy())
    return np.stack(out, axis=1)  # (C, Z, Y, X)


@pytest.mark.parametrize(("k", "overlap", "block"), [
    (3, 0.25, (6, 20, 13)),
    (3, 0.5, (4, 7, 5)),
    (5, 0.25, (1, 20, 6)),
])
def test_25d_equals_monai_per_section(k: int, overlap: float, block: tuple[int, ...]) -> None:
    torch.manual_seed(k)
    net = UNet(2, k, 2, channels=(4, 8), strides=(2,), num_res_units=1).eval()
    volume = np.random.default_rng(k).normal(size=SHAPE).astype(np.float32)
    ref = reference(volume, net, k, (8, 16), overlap)
    out = predict_logits(volume, net,
                         PredictOptions(patch_size=(1, 8, 16), overlap=overlap, block_size=block,
                                        batch_size=3, device="cpu"),
                         network=Network(kind="2.5d", context=k)).compute()
    assert out.shape == ref.shape == (2, *SHAPE)
    assert np.abs(out - ref).max() < 1e-4


class MiddleTimesTwo(nn.Module):
    """A per-voxel 2.5-D "network": twice the middle section of the stack."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == self.k
        return 2 * x[:, self.k // 2:self.k // 2 + 1]


@pytest.mark.parametrize("tta", [False, True])
def test_25d_per_voxel_model_exact_and_context_order(tta: bool) -> None:
    volume = np.random.default_rng(9).normal(size=SHAPE).astype(np.float32)
    out = predict_logits(volume, MiddleTimesTwo(5),
                         PredictOptions(patch_size=(1, 8, 8), overlap=0.5, block_size=(2, 9, 13),
                                        tta=tta, device="cpu"),
                         network=Network(kind="2.5d", context=5)).compute()
    assert np.array_equal(out[0], 2 * volume)

    class Previous(nn.Module):  # channel 0 of a k = 3 stack is section z - 1
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1]

    prev = predict_logits(volume, Previous(),
                          PredictOptions(patch_size=(1, 8, 8), block_size=(3, 20, 13),
                                         device="cpu"),
                          network=Network(kind="2.5d", context=3)).compute()
    expected = np.concatenate([volume[1:2], volume[:-1]])  # section -1 mirrors section 1
    assert np.array_equal(prev[0], expected)
    one = predict_logits(volume[:1], Previous(), PredictOptions(patch_size=(1, 8, 8), device="cpu"),
                         network=Network(kind="2.5d", context=3)).compute()
    assert np.array_equal(one[0], volume[:1])  # a single section is its own context


class MiddleAffine(nn.Module):
    """Per-voxel 2.5-D channels ``(c + 1) m + c`` of the middle section ``m``, channels-last."""

    def __init__(self, k: int, classes: int) -> None:
        super().__init__()
        self.k, self.classes = k, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = x[:, self.k // 2:self.k // 2 + 1]
        out = torch.cat([(c + 1) * middle + c for c in range(self.classes)], dim=1)
        return out.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("block", [(2, 9, 13), (3, 20, 5)])
def test_25d_channels_last_logits_blend_exactly(block: tuple[int, ...]) -> None:
    """A 2-D network's channels-last logits (strided channels) blend bit-exactly."""
    volume = np.random.default_rng(5).normal(size=SHAPE).astype(np.float32) * 50
    out = predict_logits(volume, MiddleAffine(3, 4),
                         PredictOptions(patch_size=(1, 8, 8), overlap=0.5, block_size=block,
                                        batch_size=3, device="cpu"),
                         network=Network(kind="2.5d", context=3)).compute()
    expected = np.stack([(c + 1) * volume + c for c in range(4)])
    assert out.shape == (4, *SHAPE) and np.array_equal(out, expected)


def test_25d_needs_odd_context() -> None:
    volume = np.zeros(SHAPE, dtype=np.float32)
    with pytest.raises(ConfigError):
        predict_logits(volume, MiddleTimesTwo(2), PredictOptions(patch_size=(1, 8, 8)),
                       network=Network(kind="2.5d", context=2))
    with pytest.raises(ConfigError):
        predict_logits(volume, MiddleTimesTwo(3), PredictOptions(patch_size=(2, 8, 8)),
                       network=Network(kind="2.5d", context=3))
