"""``export_model``: a volseg model file as a bioimage.io model package (spec 0.5).

The package holds the network as TorchScript and ONNX weights (a pickled
``pytorch_state_dict`` only when asked for), a test input cut from an image and the
test output that volseg's own blockwise engine computes for it
(:func:`volseg.inference.predict_logits`, then the softmax/sigmoid read-out), a
README generated from the spec and its training record, covers, and the
``rdf.yaml`` of :mod:`volseg.models.rdf`.  ``bioimageio.spec`` validates the
description before the zip is written; the zip is written under a temporary name and
renamed, so it is complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from volseg.errors import ConfigError, InputError, OutputExistsError, VolsegError
from volseg.inference.options import WEIGHT_FORMATS, Citation, PackageOptions
from volseg.io.guard import check_output_location


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote."""

    output: Path
    weights: tuple[str, ...]
    test_input_shape: tuple[int, ...]
    test_output_shape: tuple[int, ...]
    model_sha256: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {"output": str(self.output), "weights": list(self.weights),
                "test_input_shape": list(self.test_input_shape),
                "test_output_shape": list(self.test_output_shape),
                "model_sha256": self.model_sha256}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sample_window(spec: Any, sample: str | None) -> np.ndarray:
    """``(Cin, Z, Y, X)`` raw intensities of the test input window: the sample's centre."""
    from volseg.io import open_volume

    size = spec.input_size
    if spec.kind == "2.5d":
        size = (int(spec.context or 1), *spec.patch_size[1:])
    path = sample or spec.training.get("image")
    if path and Path(str(path)).exists():
        arr, _ = open_volume(str(path))
        if arr.ndim == 3:
            arr = arr[None]
        if arr.shape[0] != spec.in_channels:
            raise InputError(f"{path}: {arr.shape[0]} channels, the model reads "
                             f"{spec.in_channels}")
        shape = arr.shape[1:]
        box = []
        for n, s in zip(shape, size, strict=True):
            start = max(0, (n - s) // 2)
            box.append(slice(start, start + min(n, s)))
        window = np.asarray(arr[(slice(None), *box)], dtype=np.float32)
        pad = [(0, 0)] + [(0, s - w) for s, w in zip(size, window.shape[1:], strict=True)]
        if any(after for _, after in pad):
            window = np.pad(window, pad, mode="reflect" if min(window.shape[1:]) > 1
                            else "edge")
        return window
    if sample:
        raise InputError(f"sample image {sample} does not exist")
    rng = np.random.default_rng(0)
    norm = spec.normalization
    centre, spread = 128.0, 40.0
    if norm.mode == "meanstd":
        centre, spread = float(norm.mean), float(norm.std)
    elif norm.mode == "percentile":
        centre, spread = (norm.low + norm.high) / 2, (norm.high - norm.low) / 2
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(rng.normal(size=(spec.in_channels, *size)), (0, 1.5, 1.5, 1.5))
    noise /= noise.std() or 1.0
    synthetic: np.ndarray = (centre + spread * noise).astype(np.float32)
    return synthetic


def make_test_tensors(model: str | os.PathLike[str], spec: Any,
                      sample: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return the package's test input and volseg's output for it (float32, with batch axis).

    The output is computed by the blockwise engine on the window alone: one patch for
    ``3d`` models (the blend weights cancel), the centre section of ``k`` sections for
    ``2.5d``, the valid interior of a dense pass for ``centre_voxel``; then softmax over
    the classes (sigmoid for one class) as the package's postprocessing does.
    """
    from volseg.inference.api import logits_to_probabilities, predict_logits
    from volseg.inference.options import PredictOptions

    window = _sample_window(spec, sample)
    z, y, x = (int(n) for n in window.shape[1:])
    options = PredictOptions(device="cpu", block_size=(z, y, x), batch_size=1)
    logits = np.asarray(predict_logits(window, model, options))
    probs = np.asarray(logits_to_probabilities(logits), dtype=np.float32)
    if spec.kind == "2.5d":
        k = int(spec.context or 1)
        test_in = window.reshape(1, spec.in_channels * k, *window.shape[2:])
        test_out = probs[:, k // 2][None]
    elif spec.kind == "centre_voxel":
        (b, _), _, _ = spec.halo
        tile = spec.patch_size
        test_in = window[None]
        test_out = probs[:, b:b + tile[0], b:b + tile[1], b:b + tile[2]][None]
    else:
        test_in, test_out = window[None], probs[None]
    return np.ascontiguousarray(test_in), np.ascontiguousarray(test_out)


def _readme(spec: Any, name: str, geometry: Any, weights: Sequence[str], model: Path,
            package: str) -> str:
    from volseg import __version__

    t = spec.training or {}
    lines = [f"# {name}", "",
             f"A {spec.kind} `{spec.architecture}` segmentation network trained with volseg "
             f"{__version__}, exported from `{model.name}` by `volseg export-model`.", "",
             "## Model", "",
             f"- architecture: `{spec.architecture}` {json.dumps(spec.params, sort_keys=True)}",
             f"- classes (output channels): {', '.join(spec.classes)}",
             f"- volseg patch (output window) z, y, x: {tuple(spec.patch_size)}; input window "
             f"{tuple(spec.input_size)}",
             f"- input axes: batch, channel, {', '.join(geometry.axes)}; sizes min "
             f"{geometry.minimum}, step {geometry.step}; output halo {geometry.halo}"]
    if spec.kind == "2.5d":
        lines.append(f"- 2.5-D: the {spec.context} input channels are consecutive z sections "
                     "centred on the output section (there is no z axis)")
    if spec.kind == "centre_voxel":
        lines.append(f"- valid network: receptive field {spec.receptive_field}; outputs are "
                     f"{int(spec.receptive_field) - 1} voxels smaller than the input per axis")
    lines += [f"- normalisation: {spec.normalization.model_dump(exclude_none=True)}",
              f"- voxel size (nm, z y x): {spec.voxel_size}",
              f"- weights: {', '.join(weights)}", ""]
    lines += ["## Training", ""]
    if t:
        cfg = t.get("config") or {}
        lines += [f"- image: `{t.get('image')}`, labels: `{t.get('labels')}`",
                  f"- training sections (z ranges): {t.get('train_sections')}; validation "
                  f"sections: {t.get('validation_sections')}; gap "
                  f"{(cfg.get('split') or {}).get('gap')}",
                  f"- epochs run {t.get('epochs_run')}, best epoch {t.get('best_epoch')} "
                  f"(selected by {t.get('select_metric')}), stopped: {t.get('stopped')}",
                  f"- training time {t.get('seconds_training')} s on {t.get('device')}, "
                  f"seed {t.get('seed')}", ""]
    else:
        lines += ["No training record in the model file.", ""]
    lines += ["## Validation", ""]
    best = t.get("best_metrics") or {}
    per_class = best.get("per_class") or {}
    if per_class:
        lines += ["Scores on the validation sections (held out from training) at the best "
                  "epoch:", "", "| class | IoU | F1 |", "| --- | --- | --- |"]
        for cname, s in per_class.items():
            lines.append(f"| {cname} | {_fmt(s.get('iou'))} | {_fmt(s.get('f1'))} |")
        lines += ["", f"Macro IoU {_fmt(best.get('macro_iou'))}, macro F1 "
                  f"{_fmt(best.get('macro_f1'))}.", ""]
    else:
        lines += ["No validation scores recorded; validate on annotated data of your own "
                  "(`volseg evaluate`).", ""]
    lines += ["## Running it", "",
              "```",
              f"volseg predict --model {package} --input image.ome.zarr "
              "--output prediction.ome.zarr",
              "```", "",
              "volseg blends overlapping patches (Gaussian weights) over the whole volume; "
              "tools that tile instead should crop the output halo.  The test tensors were "
              "computed by volseg's blockwise engine.", ""]
    return "\n".join(lines)


def _cover(test_in: np.ndarray, test_out: np.ndarray, spec: Any, path: Path) -> None:
    """A 2:1 cover: the test input's middle section beside it with the predicted classes."""
    from PIL import Image

    from volseg.preview import overlay

    if spec.kind == "2.5d":
        image = test_in[0, test_in.shape[1] // 2]
        probs = test_out[0]
    else:
        b = spec.halo[0][0]
        z = test_out.shape[2] // 2
        image = test_in[0, 0, z + b, b:b + test_out.shape[3], b:b + test_out.shape[4]]
        probs = test_out[0, :, z]
    labels = (probs[0] >= 0.5).astype(np.uint8) if probs.shape[0] == 1 else probs.argmax(0)
    left, right = overlay(image, None), overlay(image, labels.astype(np.uint8), alpha=0.5)
    panel = np.concatenate([left, right], axis=1)
    rgb = Image.fromarray((panel * 255).round().astype(np.uint8))
    scale = max(1, 256 // max(1, rgb.height))
    rgb.resize((rgb.width * scale, rgb.height * scale), Image.Resampling.NEAREST).save(path)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _is_volseg_package(path: Path) -> bool:
    """Whether ``path`` is a zip whose ``rdf.yaml`` carries volseg's tag."""
    import zipfile

    from volseg.yamlconfig import load_text

    try:
        with zipfile.ZipFile(path) as archive:
            rdf, _ = load_text(archive.read("rdf.yaml").decode("utf-8"), f"{path}/rdf.yaml")
    except (OSError, KeyError, UnicodeDecodeError, zipfile.BadZipFile, VolsegError):
        return False
    return isinstance(rdf, dict) and "volseg" in (rdf.get("tags") or [])


def export_model(model: str | os.PathLike[str], output: str | os.PathLike[str],
                 options: PackageOptions | None = None, *, overwrite: bool = False,
                 record: Mapping[str, Any] | None = None) -> ExportResult:
    """Write a volseg model file as a bioimage.io model package.

    Parameters
    ----------
    model
        A volseg ``.safetensors`` model file.
    output
        The package, a ``.zip`` file.
    options
        See :class:`PackageOptions`.
    overwrite
        Replace an existing package.
    record
        Added to ``config.volseg`` (e.g. the workflow stage's settings).

    Raises
    ------
    OutputExistsError
        ``output`` exists and ``overwrite`` is false.
    InputError, ConfigError
        Unreadable model/sample/cover, an invalid licence/author/citation (one line).
    """
    import torch

    from volseg.models import load_model, read_spec
    from volseg.models.backends import write_onnx, write_torchscript
    from volseg.models.rdf import (
        check_license,
        copy_into,
        describe,
        package_geometry,
        parse_author,
        parse_cite,
        safe_name,
        save_package,
    )

    opts = options or PackageOptions()
    model, out = Path(model), Path(output)
    if out.suffix.lower() != ".zip":
        raise ConfigError(f"{out}: a bioimage.io package is a .zip file; name it *.zip")
    check_output_location(out, [model, *opts.covers])
    if out.is_dir():
        raise OutputExistsError(f"{out} is a folder; a bioimage.io package is one .zip file, "
                                f"choose a file path")
    if out.exists():
        if not _is_volseg_package(out):
            raise OutputExistsError(f"{out} exists and is not a package volseg wrote; volseg "
                                    f"replaces only its own packages: choose another path or "
                                    f"remove the file yourself")
        if not overwrite:
            raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    try:
        import bioimageio.spec  # noqa: F401
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError("exporting a bioimage.io package needs the optional dependencies: "
                          "pip install 'volseg[bioimageio]'") from None
    from volseg.models import ModelSpec

    spec = read_spec(model)
    if not isinstance(spec, ModelSpec):
        raise InputError(f"{model} is not a volseg model file (.safetensors)")
    authors = [parse_author(a) for a in opts.authors]
    if opts.license is not None:
        check_license(opts.license)
    for cover in opts.covers:
        if not Path(cover).is_file():
            raise InputError(f"cover image {cover} does not exist")
    cite = [parse_cite(c.text, c.doi or c.url or "") for c in opts.cite]
    name = safe_name(opts.name or f"volseg {spec.architecture} {' '.join(spec.classes)}")
    module, _ = load_model(model)
    from volseg.inference.dense import densify

    if spec.kind == "centre_voxel":
        module = densify(module)
    test_in, test_out = make_test_tensors(model, spec, opts.sample)
    geometry = package_geometry(spec)
    example = torch.from_numpy(test_in)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".volseg-export-", dir=out.parent) as tmp:
        folder = Path(tmp)
        np.save(folder / "test_input.npy", test_in, allow_pickle=False)
        np.save(folder / "test_output.npy", test_out, allow_pickle=False)
        files: dict[str, str] = {}
        opset = None
        if opts.state_dict:
            warnings.warn("--state-dict: writing pytorch_state_dict weights, a pickle; "
                          "volseg never loads them, and consumers that do run whatever the "
                          "file says", UserWarning, stacklevel=2)
            torch.save(module.state_dict(), folder / "weights.pt")
            files["pytorch_state_dict"] = "weights.pt"
        if "torchscript" in opts.weights:
            write_torchscript(module, example, folder / "weights_torchscript.pt")
            files["torchscript"] = "weights_torchscript.pt"
        if "onnx" in opts.weights:
            opset = write_onnx(module, example, folder / "weights.onnx")
            files["onnx"] = "weights.onnx"
        covers = [copy_into(folder, c, f"cover{i}{Path(c).suffix.lower()}")
                  for i, c in enumerate(opts.covers)]
        if not covers:
            _cover(test_in, test_out, spec, folder / "cover.png")
            covers = ["cover.png"]
        (folder / "README.md").write_text(_readme(spec, name, geometry, list(files), model,
                                                         out.name))
        sha = file_sha256(model)
        from volseg import __version__

        hints = {
            "version": __version__, "kind": spec.kind, "context": spec.context,
            "receptive_field": spec.receptive_field, "patch_size": list(spec.patch_size),
            "model_sha256": sha, "spec": json.loads(spec.to_json()), **(record or {}),
        }
        description = opts.description or (
            f"volseg {spec.kind} {spec.architecture} network for EM segmentation of "
            f"{', '.join(spec.classes)}"
            + (f"; {spec.context} z sections as input channels" if spec.kind == "2.5d" else "")
            + (f"; {spec.voxel_size[-1]:g} nm voxels" if spec.voxel_size else ""))
        content = describe(
            spec, name=name, description=description, weights=files,
            test_input="test_input.npy", test_output="test_output.npy",
            documentation="README.md", covers=covers, authors=authors,
            license=opts.license, cite=cite, opset=opset, volseg_config=hints,
        )
        save_package(content, folder, out)
    return ExportResult(output=out, weights=tuple(files), test_input_shape=test_in.shape,
                        test_output_shape=test_out.shape, model_sha256=sha)


__all__ = ["WEIGHT_FORMATS", "Citation", "ExportResult", "PackageOptions", "export_model",
           "make_test_tensors"]
