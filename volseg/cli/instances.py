"""``volseg instances``: connected components of chosen classes, with one global id space.

Labels the connected components of ``--classes`` in a semantic label volume block by
block (6/18/26 connectivity), merges ids across block faces, edges and corners,
drops objects smaller than ``--min-size`` voxels, numbers the rest 1..K and writes
``OUTPUT`` as a label image of object ids (uint32, or uint64 when needed; NGFF 0.5
with one shard per block unless ``--ngff 0.4``) plus a per-object table
(id, class, voxel count, bounding box, centroid in nm) as CSV (or Parquet with
pyarrow). An interrupted run resumes; a finished output is refused unless
``--overwrite``.

The options are the fields of :class:`volseg.instances.pipeline.InstanceOptions` (the
``instances`` workflow stage's too): one flag per field, with the field's default.
"""

from __future__ import annotations

import argparse

from volseg.cli import _common
from volseg.cli._options import add_options, parse_options
from volseg.instances.options import InstanceOptions

NAME = "instances"
HELP = "connected components of chosen classes (an instance label image + object table)"
ORDER = 60


FLAGS = {"block_size": ("--block", "--block-size")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``instances``' arguments."""
    parser.add_argument("--labels", required=True, metavar="L",
                        help="semantic labels, e.g. crf.ome.zarr or "
                             "prediction.ome.zarr/labels/semantic")
    parser.add_argument("--output", required=True, metavar="O.ome.zarr",
                        help="output label image of object ids (OME-Zarr)")
    parser.add_argument("--table", metavar="O.csv",
                        help="per-object table (.csv, or .parquet when pyarrow is installed)")
    add_options(parser, InstanceOptions, flags=FLAGS, metavars={"classes": "C"})
    _common.add_overwrite(parser)


def run(args: argparse.Namespace) -> int:
    """Label the objects and print a short summary; return the exit status."""
    from volseg.instances.pipeline import run_instances

    options = parse_options(InstanceOptions, args, flags=FLAGS)
    attrs = _common.output_attrs(NAME, [], args, options)
    result = run_instances(args.labels, args.output, options, table=args.table,
                           overwrite=args.overwrite, attrs=attrs)
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
