"""predict_logits (3-D overlap-add): MONAI parity, exact per-voxel models, each patch once."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.inferers.utils import _get_scan_interval
from monai.networks.nets import UNet
from pydantic import ValidationError
from torch import nn

from volseg.errors import ConfigError
from volseg.inference import (
    Network,
    PredictOptions,
    cache_stats,
    clear_cache,
    importance_map,
    logits_to_labels,
    logits_to_probabilities,
    predict_logits,
)

SHAPE = (13, 21, 10)  # not divisible by any stride; x shorter than the patch
PATCH = (8, 8, 12)


def small_unet(in_channels: int = 1, out_channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return UNet(3, in_channels, out_channels, channels=(4, 8), strides=(2,),
                num_res_units=1).eval()


def monai_reference(x: np.ndarray, net: nn.Module, patch: tuple[int, ...], overlap: float,
                    mode: str = "gaussian", batch: int = 4) -> np.ndarray:
    inp = torch.from_numpy(x if x.ndim == 4 else x[None])[None]
    with torch.no_grad():
        out = sliding_window_inference(inp, patch, batch, net, overlap=overlap, mode=mode,
                                       sigma_scale=0.125)
    assert isinstance(out, torch.Tensor)
    return out[0].numpy()


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)


# ----------------------------------------------------------------------- weight maps
@pytest.mark.parametrize("patch", [(8, 8, 12), (1, 16, 16), (5, 7, 9), (3, 4), (64, 64, 64)])
@pytest.mark.parametrize("sigma", [0.125, 0.3])
def test_importance_maps_equal_monai(patch: tuple[int, ...], sigma: float) -> None:
    for mode in ("gaussian", "constant"):
        ours = importance_map(patch, mode, sigma_scale=sigma)
        theirs = compute_importance_map(patch, mode, sigma).numpy()
        assert ours.dtype == np.float32 and np.array_equal(ours, theirs)


def test_bump_window() -> None:
    w = importance_map((7, 9, 5), "bump")
    assert w.shape == (7, 9, 5) and w.dtype == np.float32
    assert w[3, 4, 2] == pytest.approx(1.0) and w.max() == w[3, 4, 2]
    assert np.all(w > 0) and w.min() >= 1e-3 - 1e-9
    assert np.array_equal(w, w[::-1, ::-1, ::-1])  # symmetric
    w1 = importance_map((9,), "bump")
    t = (np.arange(9) - 4) / 5.0
    np.testing.assert_allclose(w1, np.exp(1 - 1 / (1 - t**2)), rtol=1e-6)
    with pytest.raises(ValueError):
        importance_map((4, 4), "triangle")


# ---------------------------------------------------------------- per-voxel models
class Times2(nn.Module):
    """A per-voxel "network": 2 x for every input channel, ``repeat`` times."""

    def __init__(self, repeat: int = 1) -> None:
        super().__init__()
        self.repeat = repeat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([2 * x] * self.repeat, dim=1)


@pytest.mark.parametrize("blend", ["gaussian", "constant", "bump"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.8])
def test_per_voxel_model_comes_back_exactly(blend: str, overlap: float) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 11, 9, 5)).astype(np.float32) * 100  # 2 channels, odd shape
    y = predict_logits(x, Times2(repeat=2),
                       PredictOptions(patch_size=(4, 6, 7), overlap=overlap, blend=blend,
                                      block_size=(3, 4, 5), batch_size=3, device="cpu")).compute()
    assert y.shape == (4, 11, 9, 5) and y.dtype == np.float32
    assert np.array_equal(y, np.concatenate([2 * x, 2 * x]))


class Affine(nn.Module):
    """A per-voxel network of distinct channels ``(c + 1) x + c``, returned in ``layout``.

    Channels-last is how a model file's convolutions give their logits on the CPU;
    the blending reads them in that layout (strided channels).
    """

    def __init__(self, classes: int, layout: torch.memory_format | None) -> None:
        super().__init__()
        self.classes, self.layout, self.calls = classes, layout, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([(c + 1) * x[:, :1] + c for c in range(self.classes)], dim=1)
        self.calls += 1
        layout = self.layout or (torch.channels_last_3d if self.calls % 2 else
                                 torch.contiguous_format)  # None: alternating
        return out.contiguous(memory_format=layout)


@pytest.mark.parametrize("layout", [torch.channels_last_3d, torch.contiguous_format, None])
@pytest.mark.parametrize(("overlap", "block", "patch"), [
    (0.25, (5, 4, 6), (4, 6, 5)), (0.5, (11, 9, 13), (4, 6, 5)), (0.8, (3, 7, 4), (4, 6, 5)),
    (0.5, (4, 9, 5), (4, 12, 5)),  # y shorter than the patch: padded, a negative start
])
def test_channels_last_logits_blend_exactly(layout: torch.memory_format | None,
                                            overlap: float, block: tuple[int, ...],
                                            patch: tuple[int, ...]) -> None:
    """Logits in either layout (or alternating by batch) blend to the whole-array values.

    Channels-last logits accumulate channels-last (each voxel's first product
    written, the others added), the others channel by channel; through every
    emission, overhang and merge a per-voxel network's values come back bit for bit.
    """
    from volseg.inference.blockwise import ModelCall
    from volseg.inference.cache import ModelRef

    net = Affine(5, layout)
    x = np.random.default_rng(4).normal(size=(11, 9, 13)).astype(np.float32) * 50
    logits = ModelCall(device="cpu").predictor(ModelRef.from_module(net))(
        np.ones((2, 1, 4, 6, 5), np.float32))
    assert logits.shape == (2, 5, 4, 6, 5)
    assert logits.flags.c_contiguous == (layout == torch.contiguous_format)  # None: 1st
    y = predict_logits(x, net, PredictOptions(patch_size=patch, overlap=overlap,
                                              block_size=block, batch_size=3,
                                              device="cpu")).compute()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)[None, None])[0].numpy()
    assert y.shape == (5, 11, 9, 13) and np.array_equal(y, expected)


# ------------------------------------------------------------------- MONAI parity
@pytest.mark.parametrize("overlap", [0.25, 0.5])
@pytest.mark.parametrize(
    ("block", "input_chunks", "batch"),
    [((13, 21, 10), (13, 21, 10), 4),   # one block
     ((5, 7, 4), (3, 21, 10), 3),       # small blocks, input chunked differently
     ((8, 16, 3), (7, 5, 6), 1)],       # blocks of a patch, thin x blocks
)
def test_monai_parity_unet(volume: np.ndarray, overlap: float, block: tuple[int, ...],
                           input_chunks: tuple[int, ...], batch: int) -> None:
    net = small_unet()
    ref = monai_reference(volume, net, PATCH, overlap)
    image = da.from_array(volume, chunks=input_chunks)
    out = predict_logits(image, net,
                         PredictOptions(patch_size=PATCH, overlap=overlap, block_size=block,
                                        batch_size=batch, device="cpu"))
    assert out.chunks[1:] == tuple(
        tuple(min(b, n - i) for i in range(0, n, b)) for n, b in zip(SHAPE, block,
                                                                    strict=True))
    y = out.compute()
    assert y.shape == ref.shape == (3, *SHAPE)
    assert np.abs(y - ref).max() < 1e-4


def test_monai_parity_constant_blend_two_input_channels() -> None:
    x = np.random.default_rng(2).normal(size=(2, 9, 17, 12)).astype(np.float32)
    net = small_unet(in_channels=2, out_channels=2, seed=3)
    ref = monai_reference(x, net, (8, 8, 8), 0.4, mode="constant")
    y = predict_logits(x, net,
                       PredictOptions(patch_size=(8, 8, 8), overlap=0.4, blend="constant",
                                      block_size=(4, 9, 5), device="cpu")).compute()
    assert np.abs(y - ref).max() < 1e-4


# -------------------------------------------------------------- each patch once
class Recorder(nn.Module):
    """Records the first voxel of every patch it sees (coded positions) and returns 2 x."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []
        self.calls = 0
        self._lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._lock:
            self.seen.extend(float(v) for v in x[:, 0, 0, 0, 0])
            self.calls += 1
        return 2 * x


@pytest.mark.parametrize("block", [(2, 3, 2), (4, 4, 4), (5, 16, 7), (17, 20, 13)])
def test_each_patch_evaluated_once(block: tuple[int, ...]) -> None:
    shape, patch, overlap, batch = (17, 20, 13), (4, 6, 5), 0.5, 4
    coded = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    rec = Recorder()
    y = predict_logits(coded, rec,
                       PredictOptions(patch_size=patch, overlap=overlap, block_size=block,
                                      batch_size=batch, device="cpu"),
                       network=Network(out_channels=1)).compute()
    assert np.array_equal(y[0], 2 * coded)
    interval = _get_scan_interval(shape, patch, 3, (overlap,) * 3)
    grid = [coded[tuple(s.start for s in sl)] for sl in dense_patch_slices(shape, patch,
                                                                            interval)]
    assert len(rec.seen) == len(grid)  # forward passes = grid patches
    assert sorted(rec.seen) == sorted(float(v) for v in grid)  # and exactly those
    assert rec.calls < len(grid) or batch == 1  # batched


def test_graph_is_linear_in_blocks() -> None:
    x = da.zeros((40, 40, 40), chunks=10, dtype=np.float32)
    sizes = {}
    for block in (20, 10):
        out = predict_logits(x, Times2(),
                             PredictOptions(patch_size=(8, 8, 8), overlap=0.25,
                                            block_size=(block,) * 3),
                             network=Network(out_channels=1))
        nblocks = int(np.prod(out.numblocks))
        ours = [k for k in dict(out.__dask_graph__())
                if isinstance(k, tuple) and str(k[0]).startswith("volseg-")]
        sizes[block] = len(ours) / nblocks
    # per block: one emission, one merge and at most 8 pieces (block >= patch - 1)
    assert sizes[10] <= 10 and sizes[20] <= 10
    assert sizes[10] > 3  # neighbours' overhangs are really added


# ------------------------------------------------------------------ TTA and read-outs
class FlipAveraged(nn.Module):
    """Reference TTA: the average of a network over the 8 flips, inside one module."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for axes in [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]:
            xi = torch.flip(x, axes) if axes else x
            o = self.net(xi)
            outs.append(torch.flip(o, axes) if axes else o)
        return torch.stack(outs).mean(0)


def test_tta_averages_eight_flips(volume: np.ndarray) -> None:
    net = small_unet(seed=4)
    ours = predict_logits(volume, net,
                          PredictOptions(patch_size=PATCH, overlap=0.25, tta=True,
                                         block_size=(7, 11, 10), device="cpu")).compute()
    ref = predict_logits(volume, FlipAveraged(net),
                         PredictOptions(patch_size=PATCH, overlap=0.25, block_size=(13, 21, 10),
                                        device="cpu")).compute()
    assert np.abs(ours - ref).max() < 1e-5
    plain = predict_logits(volume, net,
                           PredictOptions(patch_size=PATCH, overlap=0.25, device="cpu")).compute()
    assert np.abs(ours - plain).max() > 1e-3  # TTA does change the result
    exact = predict_logits(volume, Times2(),
                           PredictOptions(patch_size=PATCH, tta=True, device="cpu")).compute()
    assert np.array_equal(exact[0], 2 * volume)


def test_probabilities_and_labels() -> None:
    logits = np.array([[[[0.0, 2.0, -1.0]]], [[[1.0, 0.0, -1.0]]]], dtype=np.float32)
    p = logits_to_probabilities(logits)
    np.testing.assert_allclose(p.sum(0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p[1, 0, 0, 0], np.exp(1) / (1 + np.exp(1)), rtol=1e-6)
    assert logits_to_labels(logits).tolist() == [[[1, 0, 0]]]  # tie -> lowest id
    one = logits[:1]
    np.testing.assert_allclose(logits_to_probabilities(one)[0, 0, 0, 1],
                               1 / (1 + np.exp(-2.0)), rtol=1e-6)
    assert logits_to_labels(one).tolist() == [[[1, 1, 0]]]  # sigmoid >= 0.5
    lazy = da.from_array(logits, chunks=(1, 1, 1, 2))
    assert np.array_equal(logits_to_labels(lazy).compute(), logits_to_labels(logits))
    np.testing.assert_allclose(logits_to_probabilities(lazy.rechunk({0: -1})).compute(), p)


def test_bad_arguments_are_rejected(volume: np.ndarray) -> None:
    net = Times2()
    for kwargs in ({"blend": "triangle"}, {"overlap": 1.0}, {"precision": "int8"},
                   {"batch_size": 0}, {"device": "tpu"}, {"patch_size": (0, 8, 8)}):
        with pytest.raises(ValidationError):
            PredictOptions(**kwargs)
    with pytest.raises(ValidationError):
        Network(kind="4d")
    with pytest.raises(ConfigError):
        predict_logits(volume, net)  # no patch size for a module
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError):
            predict_logits(volume, net, PredictOptions(patch_size=PATCH, device="cuda"),
                           network=Network(out_channels=1)).compute()


# ------------------------------------------------------- model files, cache, cluster
def _model_file(tmp_path, seed: int = 5):  # type: ignore[no-untyped-def]
    from volseg.models import ModelSpec, Normalization, build_model, save_model

    spec = ModelSpec(architecture="unet3d", params={"widths": [4, 8], "num_res_units": 1},
                     classes=("bg", "membrane", "mito"), patch_size=PATCH,
                     normalization=Normalization(mode="meanstd", mean=100.0, std=20.0))
    torch.manual_seed(seed)
    net = build_model(spec).eval()
    path = save_model(net, spec, tmp_path / "model.safetensors")
    return path, net, spec


def test_model_file_uses_spec_and_normalisation(tmp_path, volume: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    path, net, spec = _model_file(tmp_path)
    raw = volume * 20 + 100
    ref = monai_reference(spec.normalization.apply(raw), net, PATCH, 0.25)
    clear_cache()
    y = predict_logits(raw, path, PredictOptions(block_size=(6, 10, 10), device="cpu")).compute()
    assert np.abs(y - ref).max() < 1e-4
    assert cache_stats()["loads"] == 1  # once for the whole volume, not per block


def test_model_files_run_channels_last_on_the_cpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A model file runs in NDHWC layout on the CPU; a caller's module keeps its own."""
    from volseg.inference.cache import ModelRef, get_model, input_format

    path, net, _ = _model_file(tmp_path)
    cached = get_model(ModelRef.from_path(path), torch.device("cpu"))
    assert cached.memory_format == torch.channels_last_3d
    assert input_format(cached.module) == torch.channels_last_3d
    assert input_format(net) == torch.contiguous_format  # the caller's module: untouched
    mine = get_model(ModelRef.from_module(net), torch.device("cpu"))
    assert mine.memory_format == torch.contiguous_format
    assert input_format(nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)) == \
        torch.channels_last
    assert input_format(nn.Linear(3, 4)) == torch.contiguous_format


def test_run_predict_loads_the_network_once_before_the_blocks(tmp_path, volume: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """The up-front load warms the very cache entry the block tasks use."""
    from volseg.inference.pipeline import run_predict
    from volseg.io.omezarr import write_image

    path, _, _ = _model_file(tmp_path)
    image = tmp_path / "image.ome.zarr"
    write_image((volume * 20 + 100).astype(np.float32), image, voxel_size=(8, 8, 8))
    clear_cache()
    result = run_predict(path, image, tmp_path / "out.ome.zarr",
                         PredictOptions(device="cpu", block_size=(6, 10, 10), pyramid=False))
    assert result.computed_blocks == result.total_blocks > 1
    assert cache_stats()["loads"] == 1
    assert cache_stats()["hits"] >= 1  # the emissions found the entry loaded up front


@pytest.fixture(scope="module")
def client():  # type: ignore[no-untyped-def]
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=":0", memory_limit="2GiB") as cluster, \
            distributed.Client(cluster) as c:
        yield c


def test_monai_parity_on_local_cluster(client, tmp_path, volume: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    import dask

    net = small_unet(seed=6)
    for overlap, block in ((0.25, (5, 7, 4)), (0.5, (4, 6, 10))):
        ref = monai_reference(volume, net, PATCH, overlap)
        out = predict_logits(da.from_array(volume, chunks=(4, 9, 10)), net,
                             PredictOptions(patch_size=PATCH, overlap=overlap, block_size=block,
                                            device="cpu"))
        with dask.config.set(scheduler=client):
            y = out.compute()
        assert np.abs(y - ref).max() < 1e-4
    # the model file is loaded once per worker process, however many blocks it runs
    path, fnet, spec = _model_file(tmp_path, seed=7)
    client.run(clear_cache)
    raw = volume * 20 + 100
    out = predict_logits(raw, path, PredictOptions(block_size=(3, 5, 5), device="cpu"))
    y = client.compute(out).result()
    ref = monai_reference(spec.normalization.apply(raw), fnet, PATCH, 0.25)
    assert np.abs(y - ref).max() < 1e-4
    # both outputs written from one graph on the cluster, equal to the local result
    from volseg.io.store import store_arrays

    root = zarr.open_group(str(tmp_path / "o.zarr"), mode="w", zarr_format=3)
    lab = root.create_array("l", shape=SHAPE, chunks=(3, 5, 5), shards=(3, 5, 5),
                            dtype=np.uint8)
    prob = root.create_array("p", shape=(3, *SHAPE), chunks=(3, 3, 5, 5),
                             shards=(3, 3, 5, 5), dtype=np.float32)
    report = store_arrays([(logits_to_labels(out), lab), (logits_to_probabilities(out), prob)],
                          description="t", client=client)
    assert report.total_blocks == report.computed_blocks == out.npartitions
    assert np.array_equal(lab[...], logits_to_labels(y))
    np.testing.assert_allclose(prob[...], logits_to_probabilities(y), atol=1e-6)
    stats = client.run(cache_stats)
    assert len(stats) == 2
    assert all(s["loads"] <= 1 for s in stats.values())
    assert sum(s["loads"] for s in stats.values()) >= 1
    emissions = sum(1 for k in dict(out.__dask_graph__())
                    if isinstance(k, tuple) and str(k[0]).startswith("volseg-emit"))
    assert emissions > 2
    assert sum(s["hits"] + s["loads"] for s in stats.values()) == 2 * emissions


def test_cpu_block_tasks_run_one_thread_passes_without_the_lock() -> None:
    """On the CPU a block's predictor sets ``cpu_threads`` and takes no model lock."""
    from volseg.inference.blockwise import ModelCall
    from volseg.inference.cache import ModelRef

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ref = ModelRef.from_module(nn.Conv3d(1, 2, 1))
        predictor = ModelCall(device="cpu", cpu_threads=1).predictor(ref)
        assert torch.get_num_threads() == 1
        assert predictor._exclusive() is not predictor.model.lock
        out = predictor(np.ones((1, 1, 2, 3, 4), np.float32))
        assert out.shape == (1, 2, 2, 3, 4)
        ModelCall(device="cpu", cpu_threads=None).predictor(ref)
        assert torch.get_num_threads() == 1  # None leaves the setting alone
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("architecture", "params", "patch", "batch_shape"), [
    ("unet3d", {"widths": [4, 8], "num_res_units": 1}, (8, 8, 8), (2, 1, 8, 8, 8)),
    ("unet25d", {"widths": [4, 8], "context": 3}, (1, 16, 16), (2, 1, 3, 16, 16)),
    ("centre_voxel", {"receptive_field": 6, "width": 4, "head_width": 8}, (4, 4, 4),
     (1, 1, 9, 9, 9)),
])
def test_channels_last_passes_equal_plain_passes(tmp_path, architecture: str, params: dict,  # type: ignore[no-untyped-def]
                                                 patch: tuple[int, ...],
                                                 batch_shape: tuple[int, ...]) -> None:
    """Every network kind loaded from a file gives the logits of its plain-layout twin."""
    import copy

    from volseg.inference.cache import CachedModel, ModelRef, get_model
    from volseg.inference.predictor import Predictor
    from volseg.models import ModelSpec, build_model, save_model

    spec = ModelSpec(architecture=architecture, params=params, classes=("a", "b", "c"),
                     patch_size=patch)
    torch.manual_seed(3)
    path = save_model(build_model(spec).eval(), spec, tmp_path / "m.safetensors")
    dense = spec.kind == "centre_voxel"
    cached = get_model(ModelRef.from_path(path, dense=dense), torch.device("cpu"))
    want = torch.channels_last if spec.kind == "2.5d" else torch.channels_last_3d
    assert cached.memory_format == want
    plain = CachedModel(module=copy.deepcopy(cached.module).to(  # type: ignore[call-overload]
        memory_format=torch.contiguous_format), device=cached.device)
    assert plain.memory_format == torch.contiguous_format
    batch = np.random.default_rng(0).standard_normal(batch_shape).astype(np.float32)
    got = Predictor(cached, kind=spec.kind)(batch)
    ref = Predictor(plain, kind=spec.kind)(batch)
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5
