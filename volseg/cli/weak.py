"""``volseg weak CONFIG.yaml``: weak labels from tile tags (CAM pseudo-labels, then training)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "weak"
HELP = ("train a tile classifier with class activation maps (Puzzle-CAM) from tile tags, "
        "write pseudo-labels and optionally train a segmentation network on them")
ORDER = 31


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``weak``'s options."""
    parser.add_argument("config", help="weak-label YAML (see docs/learning_from_less.md)")
    parser.add_argument(
        "-o", "--output-dir", default=".",
        help="where cam.safetensors, pseudo.ome.zarr (and model.safetensors) go (default: .)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set cam.threshold=0.4 (repeatable)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing products")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and print it resolved; train nothing")


def run(args: argparse.Namespace) -> int:
    """Validate the config and run; print the summary as JSON."""
    from volseg.train.weak import load_weak_config, weak

    config = load_weak_config(args.config, args.overrides)
    if args.check:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    summary = weak(
        config, image=Path(config.image), tags=Path(config.tags),
        instances=Path(config.instances) if config.instances else None,
        truth=Path(config.truth) if config.truth else None,
        output_dir=Path(args.output_dir), overwrite=args.overwrite,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0
