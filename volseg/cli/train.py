"""``volseg train CONFIG.yaml``: train a model from (sparse) labels."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from volseg.cli import _common

NAME = "train"
HELP = "train a segmentation model from an image and (sparse) labels described in a YAML"
ORDER = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``train``'s options."""
    parser.add_argument("config", help="training YAML (see docs and benchmarks/quality/)")
    parser.add_argument(
        "-o", "--output-dir", default=".",
        help="where model.safetensors and training/ are written (default: current directory)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set epochs=5 (repeatable)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and print it resolved; train nothing")


def run(args: argparse.Namespace) -> int:
    """Validate the config and train; print the summary as JSON."""
    from volseg.train import load_train_config, train

    config = load_train_config(args.config, args.overrides)
    if args.check:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    summary = train(config, image=Path(config.image), labels=Path(config.labels),
                    output_dir=Path(args.output_dir), overwrite=args.overwrite)
    print(_common.json_text(summary))  # a diverged loss is null, not a bare NaN
    return 0
