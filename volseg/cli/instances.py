"""``volseg instances``: connected components of chosen classes, with one global id space.

Labels the connected components of ``--classes`` in a semantic label volume block by
block (6/18/26 connectivity), merges ids across block faces, edges and corners,
drops objects smaller than ``--min-size`` voxels, numbers the rest 1..K and writes
``OUTPUT/labels/instances`` (uint32, or uint64 when needed) plus a per-object table
(id, class, voxel count, bounding box, centroid in nm) as CSV (or Parquet with
pyarrow). An interrupted run resumes; a finished output is refused unless
``--overwrite``.
"""

from __future__ import annotations

import argparse

from volseg.cli import _common
from volseg.errors import ConfigError
from volseg.instances.pipeline import DEFAULT_BLOCK, run_instances

NAME = "instances"
HELP = "connected components of chosen classes (an instance label image + object table)"
ORDER = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``instances``' arguments."""
    parser.add_argument("--labels", required=True, metavar="L",
                        help="semantic labels, e.g. crf.ome.zarr or "
                             "prediction.ome.zarr/labels/semantic")
    parser.add_argument("--classes", required=True, nargs="+", type=_class_id, metavar="C",
                        help="class ids whose connected components become objects")
    parser.add_argument("--connectivity", type=int, choices=(6, 18, 26), default=26,
                        help="6 (faces), 18 (+edges) or 26 (+corners) (default 26)")
    parser.add_argument("--min-size", type=int, default=0, metavar="N",
                        help="drop objects with fewer voxels (default 0: keep all)")
    parser.add_argument("--output", required=True, metavar="O.ome.zarr",
                        help="output label image of object ids (OME-Zarr)")
    parser.add_argument("--table", metavar="O.csv",
                        help="per-object table (.csv, or .parquet when pyarrow is installed)")
    parser.add_argument("--block", nargs=3, type=_common.positive_int, metavar=("Z", "Y", "X"),
                        help="block size in voxels (default "
                             f"{' '.join(map(str, DEFAULT_BLOCK))})")
    _common.add_voxel_size(parser)
    _common.add_chunks(parser, default="64 64 64, divisors of the block; in NGFF 0.5 the "
                                       "inner chunks of the shards")
    _common.add_ngff(parser)
    parser.add_argument("--no-pyramid", action="store_true",
                        help="write level 0 only (no downsampled levels)")
    _common.add_overwrite(parser)


def _class_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a class id") from None
    if not 0 <= value <= 65534:
        raise argparse.ArgumentTypeError(f"class id {value} is not in 0..65534")
    return value


def run(args: argparse.Namespace) -> int:
    """Label the objects and print a short summary; return the exit status."""
    if args.min_size < 0:
        raise ConfigError(f"--min-size must be >= 0, got {args.min_size}")
    attrs = _common.output_attrs(NAME, [], args)
    result = run_instances(
        args.labels, args.output, classes=args.classes, connectivity=args.connectivity,
        min_size=args.min_size, table=args.table, block_size=args.block,
        voxel_size=args.voxel_size, overwrite=args.overwrite, attrs=attrs,
        pyramid=not args.no_pyramid, ngff=args.ngff, chunks=args.chunks,
    )
    info = result.to_dict()
    resumed = ""
    if info["resumed"]:
        resumed = f" (resumed: {info['skipped_blocks']} of {info['blocks']} blocks were done)"
    print(f"wrote {result.output}{resumed}")
    print(f"  {result.n_objects} objects ({result.n_merged} before the size filter, "
          f"{result.n_provisional} pieces in {info['blocks']} blocks), {result.dtype}")
    if result.table is not None:
        print(f"  table {result.table}")
    if result.voxel_size is None:
        print("  note: the labels have no voxel size; centroids are in voxels "
              "(pass --voxel-size Z Y X)")
    print(f"  {result.seconds:.1f} s")
    return 0
