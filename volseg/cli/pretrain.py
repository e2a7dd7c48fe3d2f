"""``volseg pretrain CONFIG.yaml``: self-supervised pre-training on an unlabelled volume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "pretrain"
HELP = ("pre-train a network on an unlabelled volume (masked_centre or vae), for "
        "fine-tuning with train.init")
ORDER = 29


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``pretrain``'s options."""
    parser.add_argument("config", help="pre-training YAML (see docs/learning_from_less.md)")
    parser.add_argument(
        "-o", "--output-dir", default=".",
        help="where pretrained.safetensors and pretraining/ are written (default: .)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set method=vae (repeatable)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and print it resolved; train nothing")


def run(args: argparse.Namespace) -> int:
    """Validate the config and pre-train; print the summary as JSON."""
    from volseg.train.pretrain import load_pretrain_config, pretrain

    config = load_pretrain_config(args.config, args.overrides)
    if args.check:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    summary = pretrain(config, image=Path(config.image), output_dir=Path(args.output_dir),
                       overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    return 0
