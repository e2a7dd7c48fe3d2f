"""``volseg run WORKFLOW.yaml``: run a whole workflow, resumably."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "run"
HELP = "run a workflow YAML (stages in order, on the configured Dask cluster, resumable)"
ORDER = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``run``'s options."""
    parser.add_argument("workflow", help="workflow YAML, e.g. workflows/demo.yaml, or the name "
                                         "of a packaged workflow (demo, fibsem, lucchi, "
                                         "micrograph, cryoet_membranes)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set predict.batch_size=8 (repeatable)",
    )
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute every stage and replace existing outputs")
    parser.add_argument("--stages", nargs="+", metavar="STAGE",
                        help="run only these stages (default: all in the file)")
    parser.add_argument("--check", action="store_true",
                        help="validate the workflow and print the resolved config (for a "
                             "SLURM cluster also the job script each job runs); run nothing")


def run(args: argparse.Namespace) -> int:
    """Validate and run the workflow; return the exit status."""
    from volseg.cluster import SlurmCluster
    from volseg.workflow.runner import run_workflow
    from volseg.workflow.schema import load_workflow

    workflow = load_workflow(args.workflow, args.overrides)
    names = [m.NAME for m, _ in workflow.stages()]
    unknown = sorted(set(args.stages or ()) - set(names))
    if unknown:  # also with --check, which validates what a run would
        from volseg.errors import ConfigError

        raise ConfigError(f"--stages: {', '.join(unknown)} not in {workflow.source}; choose "
                          f"from {', '.join(names)}")
    if args.check:
        print(json.dumps(workflow.config.model_dump(mode="json"), indent=2))
        cluster = workflow.config.cluster
        if isinstance(cluster, SlurmCluster):
            from volseg.cluster.slurm import describe, log_directory_for

            workdir = workflow.output_dir(Path.cwd())
            root = workdir if isinstance(workdir, Path) else Path.cwd()
            default = root / ".volseg" / "slurm"
            print(describe(cluster, log_directory=log_directory_for(cluster, default)), end="")
        return 0
    run_workflow(workflow, overwrite=args.overwrite, only=args.stages)
    return 0
