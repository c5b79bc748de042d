"""Pipeline parameters are declared once (PipelineParams, from the step configs):
the KFP signature, the steps' wiring and the CLI options all follow its fields."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import Field
from typer.main import get_command
from typer.testing import CliRunner

from components.config import EvaluateConfig, IngestConfig, PushConfig, TrainConfig, TuneParams
from pipelines.cli import COMPILE_FIELDS, FLAGS, RUN_FIELDS, SUBMIT_FIELDS, app
from pipelines.options import all_but, with_params
from pipelines.params import PipelineParams, pipeline_signature
from pipelines.pipeline import twinflow_pipeline, twinflow_tuned_pipeline

DEFAULTS = PipelineParams().as_arguments()


def test_every_field_is_a_pipeline_input_with_its_default() -> None:
    inputs = twinflow_pipeline.component_spec.inputs  # what KFP read from the signature
    assert list(inputs) == list(PipelineParams.model_fields)
    assert {name: spec.default for name, spec in inputs.items()} == DEFAULTS
    assert {spec.type for spec in inputs.values()} == {"String", "Integer", "Float", "Boolean"}


def test_step_fields_keep_the_step_configs_definition() -> None:
    for config in (IngestConfig, TrainConfig, EvaluateConfig, PushConfig):
        shared = set(config.model_fields) & set(PipelineParams.model_fields) - {"framework"}
        assert shared, config
        for name in shared:
            mine, theirs = PipelineParams.model_fields[name], config.model_fields[name]
            assert (mine.default, mine.metadata, mine.description) == (
                theirs.default, theirs.metadata, theirs.description), name
    with pytest.raises(ValueError, match="less than or equal to 10000"):
        PipelineParams(epochs=10_001)  # TrainConfig's bound


def _tasks(ir: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    dags = [ir["root"]["dag"], *(c["dag"] for c in ir["components"].values() if "dag" in c)]
    return [(name, task) for dag in dags for name, task in dag["tasks"].items()]


@pytest.mark.parametrize("tuned", [False, True], ids=["plain", "tuned"])
def test_each_step_gets_the_pipeline_parameters_it_declares(tmp_path: Path, tuned: bool) -> None:
    """Every field reaches a step that declares it; the tune fields only in the tuned
    pipeline (the plain one keeps them as unused inputs, one signature for both)."""
    from kfp import compiler

    pipeline = twinflow_tuned_pipeline if tuned else twinflow_pipeline
    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    ir = yaml.safe_load((tmp_path / "p.yaml").read_text())
    wired = set()
    for name, task in _tasks(ir):
        component = ir["components"][task["componentRef"]["name"]]
        if "executorLabel" not in component:
            continue  # a sub-DAG, not a step
        declared = component.get("inputDefinitions", {}).get("parameters", {})
        given = task.get("inputs", {}).get("parameters", {})
        for param in set(declared) & set(PipelineParams.model_fields):
            source = given[param]  # KeyError: a step's declared parameter is not passed
            if "runtimeValue" in source:  # one framework of a tail, the KFP job id
                assert param in ("framework", "run_key"), (name, param)
                continue
            assert source["componentInputParameter"] in (param, f"pipelinechannel--{param}")
            wired.add(param)
    unused = set() if tuned else set(TuneParams.model_fields)
    assert wired == set(PipelineParams.model_fields) - {"run_key"} - unused  # run_key: client_key


def _options(command: str) -> dict[str, Any]:
    """The click parameters typer made of a command's signature, by name."""
    commands = get_command(app).commands  # type: ignore[attr-defined]
    return {p.name: p for p in commands[command].params if p.name}


@pytest.mark.parametrize(("params", "op"), [
    ("IngestParams", "ingest_op"), ("TrainParams", "train_ops"),
    ("EvaluateParams", "evaluate_ops"), ("CompressParams", "compress_ops"),
    ("PushParams", "push_ops")])
def test_every_step_parameter_is_declared_by_its_component(params: str, op: str) -> None:
    """A field added to a step's *Params must also be an input of that step's component
    (else the pipeline would silently never pass it)."""
    import importlib

    import components.config as config

    module = importlib.import_module(f"components.{op.split('_')[0]}.component")
    ops = getattr(module, op)
    for component in ops.values() if isinstance(ops, dict) else [ops]:
        declared = set(component.component_spec.inputs or {})
        missing = set(getattr(config, params).model_fields) - declared
        assert not missing, f"{op}: {sorted(missing)} not inputs of the component"


@pytest.mark.parametrize(("command", "fields"), [("run", RUN_FIELDS),
                                                 ("compile", COMPILE_FIELDS),
                                                 ("submit", SUBMIT_FIELDS)])
def test_cli_options_are_the_fields(command: str, fields: tuple[str, ...]) -> None:
    options = _options(command)
    for name in fields:
        field, option = PipelineParams.model_fields[name], options[name]
        default = option.default
        assert getattr(default, "value", default) == DEFAULTS[name], name
        assert getattr(option, "help", None) == field.description, name
        assert set(FLAGS.get(name, ())) <= {*option.opts, *option.secondary_opts}, name


def _help_blocks(text: str) -> dict[str, str]:
    """Each option's lines of a --help text, joined, by the option's long name."""
    blocks: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line.lstrip().startswith("-"):
            name = next(w for w in line.replace(",", " ").split() if w.startswith("--"))
        if name:
            blocks[name] = blocks.get(name, "") + " " + line.strip()
    return blocks


def test_run_help_shows_the_fields_defaults() -> None:
    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0, result.output
    blocks = _help_blocks(result.output)
    for name in RUN_FIELDS:
        flag = FLAGS.get(name, (f"--{name.replace('_', '-')}",))[0]
        default = DEFAULTS[name]
        shown = f"no-{flag[2:]}" if default is False else str(default)
        assert (f"[default: {shown}]" in " ".join(blocks[flag].split())) or default == "", name
    assert "-f, --framework" in result.output
    assert "--checkpoint-root" not in blocks


class _Extended(PipelineParams):
    """PipelineParams with one parameter more, declared only here."""

    knob: int = Field(default=7, ge=0, description="A parameter added in one place.")


def test_a_field_added_in_one_place_reaches_signature_and_cli() -> None:
    knob = pipeline_signature(_Extended).parameters["knob"]
    assert (knob.default, knob.annotation) == (7, int)
    seen: list[_Extended] = []
    cli = typer.Typer(add_completion=False, rich_markup_mode=None)

    @cli.command()
    @with_params(all_but(model=_Extended), model=_Extended)
    def go(**values: Any) -> None:
        seen.append(_Extended(**values))

    assert "knob" in inspect.signature(go).parameters
    runner = CliRunner()
    assert "A parameter added in one place." in runner.invoke(cli, ["--help"]).output
    assert runner.invoke(cli, ["--knob", "3", "--framework", "both"]).exit_code == 0
    assert (seen[0].knob, seen[0].framework, seen[0].epochs) == (3, "both", 10)


def test_a_command_option_named_like_a_field_is_refused() -> None:
    with pytest.raises(ValueError, match="epochs"):
        @with_params(["epochs"])
        def clash(epochs: int = 1, **values: Any) -> None:
            """Would get only one of the two `epochs`."""
