"""Centre-voxel CNNs evaluated densely equal classifying each voxel's own patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from volseg.inference import Network, PredictOptions, densify, predict_logits, receptive_field
from volseg.inference.dense import needs_densify

SHAPE = (11, 14, 9)


def valid_cnn(r: int, seed: int = 0, classes: int = 3) -> nn.Module:
    """Valid 3-D convolutions with receptive field r (3³ kernels, one 2³ for even r)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    c = 1
    for _ in range((r - 1) // 2):
        layers += [nn.Conv3d(c, 6, 3), nn.ReLU()]
        c = 6
    if (r - 1) % 2:
        layers += [nn.Conv3d(c, 6, 2), nn.ReLU()]
    layers += [nn.Conv3d(6, classes, 1)]
    return nn.Sequential(*layers).eval()


def pooled_cnn(seed: int = 0) -> nn.Module:
    """conv3 - maxpool2 - conv3 stride 2 - conv2 - 1x1 head: R = 1+2+1+4+4 = 12."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(1, 5, 3), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(5, 6, 3, stride=2), nn.ReLU(),
        nn.Conv3d(6, 6, 2), nn.ReLU(), nn.Conv3d(6, 2, 1),
    ).eval()


def patchwise(net: nn.Module, volume: np.ndarray, r: int, positions: np.ndarray,
              border: str = "reflect") -> np.ndarray:
    """Reference: each voxel's own R-cube (from the padded volume) through the network."""
    before, after = r // 2, r - 1 - r // 2
    padded = np.pad(volume, [(before, after)] * 3, mode=border)  # type: ignore[call-overload]
    cubes = np.stack([padded[z:z + r, y:y + r, x:x + r] for z, y, x in positions])
    with torch.no_grad():
        out = net(torch.from_numpy(cubes[:, None]))
    assert out.shape[2:] == (1, 1, 1)
    return out[:, :, 0, 0, 0].numpy()


def positions(rng: np.random.Generator, n: int = 40) -> np.ndarray:
    """Random voxels plus the eight corners and some face voxels (border policy)."""
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in SHAPE], indexing="ij")).reshape(3, -1).T
    faces = np.array([[0, 5, 4], [10, 0, 3], [5, 13, 8], [1, 1, 0]])
    rand = np.stack([rng.integers(0, s, n) for s in SHAPE], axis=1)
    return np.concatenate([corners, faces, rand])


@pytest.mark.parametrize(("r", "block", "tile", "border"), [
    (5, (4, 5, 9), (3, 3, 4), "reflect"),
    (4, (11, 7, 5), (16, 16, 16), "reflect"),
    (7, (6, 14, 3), (6, 6, 6), "constant"),
])
def test_dense_equals_patchwise(r: int, block: tuple[int, ...], tile: tuple[int, ...],
                                border: str) -> None:
    rng = np.random.default_rng(r)
    volume = rng.normal(size=SHAPE).astype(np.float32)
    net = valid_cnn(r, seed=r)
    assert receptive_field(net) == r
    dense = predict_logits(volume, net,
                           PredictOptions(patch_size=tile, block_size=block, border=border,
                                          device="cpu"),
                           network=Network(kind="centre_voxel")).compute()
    assert dense.shape == (3, *SHAPE)
    pos = positions(rng)
    ref = patchwise(net, volume, r, pos, border)
    got = dense[:, pos[:, 0], pos[:, 1], pos[:, 2]].T
    assert np.abs(got - ref).max() < 1e-4


def test_volseg_centre_voxel_net_with_batch_norm() -> None:
    from volseg.models import CentreVoxelNet

    torch.manual_seed(2)
    net = CentreVoxelNet(1, 2, receptive_field=6, width=4, head_width=8, norm="batch").eval()
    assert receptive_field(net) == 6
    rng = np.random.default_rng(6)
    volume = rng.normal(size=SHAPE).astype(np.float32)
    dense = predict_logits(volume, net,
                           PredictOptions(patch_size=(5, 6, 7), block_size=(6, 7, 5), device="cpu"),
                           network=Network(kind="centre_voxel")).compute()
    pos = positions(rng, 20)
    ref = patchwise(net, volume, 6, pos)
    assert np.abs(dense[:, pos[:, 0], pos[:, 1], pos[:, 2]].T - ref).max() < 1e-4


def test_densify_pooled_and_strided_network() -> None:
    net = pooled_cnn()
    assert needs_densify(net) and receptive_field(net) == 12
    # the original network maps one 12-cube to one voxel
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 12, 12, 12)).shape == (1, 2, 1, 1, 1)
    dense = densify(net)
    assert not needs_densify(dense) and receptive_field(dense) == 12
    assert needs_densify(net)  # the original is left alone
    with torch.no_grad():
        assert dense(torch.zeros(1, 1, 12 + 6, 12 + 5, 12)).shape == (1, 2, 7, 6, 1)
    rng = np.random.default_rng(3)
    volume = rng.normal(size=SHAPE).astype(np.float32)
    out = predict_logits(volume, net,
                         PredictOptions(patch_size=(5, 5, 5), block_size=(6, 7, 9), device="cpu"),
                         network=Network(kind="centre_voxel")).compute()
    pos = positions(rng)
    ref = patchwise(net, volume, 12, pos)
    got = out[:, pos[:, 0], pos[:, 1], pos[:, 2]].T
    assert np.abs(got - ref).max() < 1e-4


def test_densify_average_pooling_and_refusals() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv3d(1, 3, 2), nn.AvgPool3d(2), nn.Conv3d(3, 2, 2)).eval()
    r = receptive_field(net)
    assert r == 1 + 1 + 1 + 2
    dense = densify(net)
    x = torch.randn(1, 1, r + 3, r + 2, r + 1)
    with torch.no_grad():
        d = dense(x)
        for z, y, w in [(0, 0, 0), (3, 2, 1), (1, 2, 0)]:
            single = net(x[:, :, z:z + r, y:y + r, w:w + r])
            assert torch.allclose(d[:, :, z, y, w], single[:, :, 0, 0, 0], atol=1e-6)
    with pytest.raises(ValueError, match="pads"):
        densify(nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.MaxPool3d(2)))
    with pytest.raises(ValueError, match="Linear"):
        densify(nn.Sequential(nn.Conv3d(1, 2, 3), nn.MaxPool3d(2), nn.Linear(2, 2)))


def test_dense_tta_and_per_voxel_identity() -> None:
    volume = np.random.default_rng(5).normal(size=SHAPE).astype(np.float32)

    class Centre(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # R = 3: the centre voxel * 2
            return 2 * x[:, :, 1:-1, 1:-1, 1:-1]

    out = predict_logits(volume, Centre(),
                         PredictOptions(patch_size=(4, 4, 4), block_size=(5, 5, 5), tta=True,
                                        device="cpu"),
                         network=Network(kind="centre_voxel", receptive_field=3)).compute()
    assert np.array_equal(out[0], 2 * volume)
