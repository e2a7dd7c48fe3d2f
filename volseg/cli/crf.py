"""``volseg crf``: refine class probabilities with a blockwise dense CRF.

Reads the class probabilities (``prediction.ome.zarr``, axes ``c, z, y, x``, uint8
``q/255`` or float) and the image, runs a fully connected CRF (Gaussian smoothness
kernel + bilateral intensity kernel, widths in nm) block by block with a halo, and
writes ``OUTPUT`` as a label image (uint8 class ids, mode pyramid, class names and
colours; NGFF 0.5 with one shard per block unless ``--ngff 0.4``). An interrupted run
resumes; a finished output is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from volseg.cli import _common
from volseg.crf.blockwise import CRFConfig
from volseg.crf.pipeline import run_crf
from volseg.errors import ConfigError, InputError

NAME = "crf"
HELP = "refine class probabilities with a blockwise dense CRF (a label image)"
ORDER = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``crf``'s arguments."""
    d = CRFConfig()
    parser.add_argument("--probabilities", required=True, metavar="P.ome.zarr",
                        help="class probabilities (c, z, y, x), e.g. prediction.ome.zarr")
    parser.add_argument("--image", metavar="I.ome.zarr",
                        help="image for the bilateral term (needed unless "
                             "--bilateral-weight 0)")
    parser.add_argument("--output", required=True, metavar="O.ome.zarr",
                        help="output label image (OME-Zarr)")
    parser.add_argument("--gaussian-sigma", type=_common.positive_float, metavar="NM",
                        default=d.gaussian_sigma_nm,
                        help=f"smoothness kernel width in nm (default {d.gaussian_sigma_nm:g})")
    parser.add_argument("--gaussian-weight", type=_common.non_negative_float, metavar="W",
                        default=d.gaussian_weight,
                        help=f"smoothness kernel weight, 0 = off (default {d.gaussian_weight:g})")
    parser.add_argument("--bilateral-sigma", type=_common.positive_float, metavar="NM",
                        default=d.bilateral_sigma_nm,
                        help=f"bilateral spatial width in nm (default {d.bilateral_sigma_nm:g})")
    parser.add_argument("--bilateral-intensity", type=_common.positive_float, metavar="V",
                        default=d.bilateral_intensity,
                        help="bilateral intensity width in image units "
                             f"(default {d.bilateral_intensity:g})")
    parser.add_argument("--bilateral-weight", type=_common.non_negative_float, metavar="W",
                        default=d.bilateral_weight,
                        help=f"bilateral weight, 0 = off (default {d.bilateral_weight:g})")
    parser.add_argument("--compat", metavar="WEIGHT|FILE.yaml", default="1",
                        help="Potts weight (cost of two different labels), or a YAML file "
                             "with a C x C cost matrix (a list of rows, or a mapping with "
                             "key 'compatibility') (default 1)")
    parser.add_argument("--iterations", type=_common.positive_int, metavar="N",
                        default=d.iterations,
                        help=f"mean-field iterations (default {d.iterations})")
    parser.add_argument("--block", nargs=3, type=_common.positive_int, metavar=("Z", "Y", "X"),
                        help="block size in voxels (default: from --memory-budget)")
    parser.add_argument("--memory-budget", type=_common.positive_int, metavar="MIB",
                        default=2048, help="memory per block in MiB when --block is not "
                                           "given (default 2048)")
    parser.add_argument("--halo", nargs=3, type=int, metavar=("Z", "Y", "X"),
                        help="halo in voxels (default: derived from the kernel widths, "
                             "weights and iterations)")
    parser.add_argument("--processes", type=_common.positive_int, metavar="N",
                        help="local worker processes (default: all cores; pydensecrf2 holds "
                             "the GIL, so the CRF runs in processes, not threads)")
    _common.add_voxel_size(parser)
    _common.add_chunks(parser, default="64 64 64, divisors of the block; in NGFF 0.5 the "
                                       "inner chunks of the shards")
    _common.add_ngff(parser)
    parser.add_argument("--no-pyramid", action="store_true",
                        help="write level 0 only (no downsampled levels)")
    _common.add_overwrite(parser)


def parse_compatibility(text: str) -> float | list[list[float]]:
    """Return a Potts weight from a number, or the matrix from a YAML file.

    The YAML file holds either a number, a list of rows, or a mapping with the key
    ``compatibility`` holding one of those (safe loading, data only).
    """
    try:
        return float(text)
    except ValueError:
        pass
    path = Path(text)
    if not path.is_file():
        raise InputError(f"--compat {text}: not a number and no such YAML file")
    try:
        data: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict):
        if set(data) != {"compatibility"}:
            raise ConfigError(f"{path}: expected one key 'compatibility', got {sorted(data)}")
        data = data["compatibility"]
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    if (isinstance(data, list) and data and all(isinstance(r, list) for r in data)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    for r in data for v in r)):
        return [[float(v) for v in row] for row in data]
    raise ConfigError(f"{path}: compatibility must be a number or a list of rows of numbers")


def run(args: argparse.Namespace) -> int:
    """Run the CRF and print a short summary; return the exit status."""
    try:
        config = CRFConfig(
            gaussian_sigma_nm=args.gaussian_sigma, gaussian_weight=args.gaussian_weight,
            bilateral_sigma_nm=args.bilateral_sigma,
            bilateral_intensity=args.bilateral_intensity,
            bilateral_weight=args.bilateral_weight,
            compatibility=parse_compatibility(args.compat), iterations=args.iterations,
            halo=tuple(args.halo) if args.halo else None,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"crf option {where}: {first['msg']}") from None
    attrs = _common.output_attrs(NAME, [], args)
    result = run_crf(
        args.probabilities, args.image, args.output, config=config,
        voxel_size=args.voxel_size, block_size=args.block,
        memory_budget=args.memory_budget * 2**20, overwrite=args.overwrite, attrs=attrs,
        processes=args.processes, pyramid=not args.no_pyramid, ngff=args.ngff,
        chunks=args.chunks,
    )
    info = result.to_dict()
    resumed = ""
    if info["resumed"]:
        resumed = f" (resumed: {info['skipped_blocks']} of {info['blocks']} blocks were done)"
    print(f"wrote {result.output}{resumed}")
    print(f"  shape {_common.format_shape(result.shape)}, {result.n_classes} classes, voxel "
          f"size {_common.format_voxel(result.voxel_size)}")
    print(f"  {info['blocks']} blocks of {_common.format_shape(result.block_size)} with halo "
          f"{_common.format_shape(result.halo)} (~{_common.format_bytes(result.block_bytes)} "
          f"per block) in {result.seconds:.1f} s")
    return 0
