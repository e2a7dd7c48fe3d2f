"""One options object per operation, shared whole by the library, the stage and the command."""

from __future__ import annotations

import argparse
from importlib import import_module

import pytest

from volseg.cli import build_parser
from volseg.cli._options import flag_names, parse_options
from volseg.crf.pipeline import CRFOptions
from volseg.errors import ConfigError
from volseg.inference.options import PredictOptions
from volseg.inference.package import PackageOptions
from volseg.instances.pipeline import InstanceOptions
from volseg.io.convert import ConvertOptions
from volseg.metrics.pipeline import EvaluateOptions
from volseg.options import Options
from volseg.postprocess.options import PostprocessOptions
from volseg.synth.pipeline import SynthOptions

# command, its options, the arguments it needs besides the options, fields it leaves out
COMMANDS: list[tuple[str, type[Options], list[str], set[str]]] = [
    ("predict", PredictOptions, ["--model", "m", "--input", "i", "--output", "o"], set()),
    ("crf", CRFOptions, ["--probabilities", "p", "--output", "o"], set()),
    ("instances", InstanceOptions, ["--labels", "l", "--output", "o", "--classes", "2"],
     set()),
    ("postprocess", PostprocessOptions, ["p.ome.zarr", "-o", "o"], set()),
    ("evaluate", EvaluateOptions, ["--prediction", "p", "--truth", "t", "--report", "r"],
     set()),
    ("convert", ConvertOptions, ["in.tif", "out.ome.zarr"], set()),
    ("synth", SynthOptions, ["fibsem", "out.ome.zarr", "--shape", "4", "8", "8"],
     {"params"}),  # free-form generator parameters: YAML only
]
STAGES = {"predict": PredictOptions, "crf": CRFOptions, "instances": InstanceOptions,
          "evaluate": EvaluateOptions, "convert": ConvertOptions, "synth": SynthOptions,
          "export_model": PackageOptions, "postprocess": PostprocessOptions}


def _parse(command: str, argv: list[str]) -> argparse.Namespace:
    return build_parser(command).parse_args([command, *argv])


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


@pytest.mark.parametrize(("command", "model", "needed", "left_out"), COMMANDS)
def test_every_option_has_one_flag_with_the_models_default(
        command: str, model: type[Options], needed: list[str], left_out: set[str]) -> None:
    sub = _subparser(command)
    dests = {a.dest: a for a in sub._actions}
    flags = getattr(import_module(f"volseg.cli.{command}"), "FLAGS", None)
    for name in model.model_fields:
        if name in left_out:
            assert name not in dests
            continue
        assert name in dests, f"volseg {command} has no flag for {model.__name__}.{name}"
        action = dests[name]
        if action.option_strings:  # a flag: --field-name unless the command names it
            assert tuple(action.option_strings) == flag_names(model, name, flags)
            if not flags or name not in flags:
                assert action.option_strings[0].lstrip("-").removeprefix("no-") \
                    == name.replace("_", "-")
    # nothing given: the options are exactly the model's defaults
    args = _parse(command, needed)
    options = parse_options(model, args, **({"kind": args.kind} if command == "synth" else {}))
    required = {name: getattr(options, name) for name, f in model.model_fields.items()
                if f.is_required()}
    assert options == model.model_validate(required)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_stage_config_is_the_options_plus_paths(name: str) -> None:
    stage = import_module(f"volseg.stages.{name}")
    model = STAGES[name]
    assert issubclass(stage.Config, model)
    extra = set(stage.Config.model_fields) - set(model.model_fields)
    for field in extra:  # what the stage adds is where it reads and writes
        info = stage.Config.model_fields[field]
        assert info.description, f"stage {name}: {field} has no description"
    for field, info in model.model_fields.items():  # one default per option
        assert stage.Config.model_fields[field].default == info.default, field


@pytest.mark.parametrize(("command", "argv", "flag"), [
    ("predict", ["--overlap", "1.5"], "--overlap"),
    ("predict", ["--batch-size", "0"], "--batch-size"),
    ("predict", ["--patch", "0", "8", "8"], "--patch"),
    ("crf", ["--memory-budget", "1"], "--memory-budget"),
    ("instances", ["--min-size", "-1"], "--min-size"),
    ("postprocess", ["--threshold", "1.5"], "--threshold"),
    ("evaluate", ["--zero-division", "0.5"], "--zero-division"),
])
def test_a_bad_value_is_one_config_error_naming_the_flag(command: str, argv: list[str],
                                                         flag: str) -> None:
    needed = next(c[2] for c in COMMANDS if c[0] == command)
    model = next(c[1] for c in COMMANDS if c[0] == command)
    flags = getattr(import_module(f"volseg.cli.{command}"), "FLAGS", None)
    args = _parse(command, [*needed, *argv])
    with pytest.raises(ConfigError, match=f"^{flag}: "):
        parse_options(model, args, flags=flags)


def test_predict_has_one_default_for_probabilities() -> None:
    from volseg.stages import predict as stage

    args = _parse("predict", ["--model", "m", "--input", "i", "--output", "o"])
    assert parse_options(PredictOptions, args).probabilities == "uint8"
    assert stage.Config().probabilities == "uint8"
