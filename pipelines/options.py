"""CLI options generated from :class:`~pipelines.params.PipelineParams`.

typer reads a command's options from ``inspect.signature``; :func:`with_params`
gives a command one option per chosen field, with the field's default and its
description as the help, so the CLI cannot drift from the pipeline's parameters.
The command receives those values as keyword arguments (``**values``) and
validates them with ``PipelineParams(**values)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pipelines.params import PipelineParams, plain_type

F = TypeVar("F", bound=Callable[..., Any])

#: The store a command reads or writes: every command takes it the same way.
TrackingOpt = Annotated[str, typer.Option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking URI (default: SQLite store in .twinflow/).")]


def field_options(names: Iterable[str], flags: Mapping[str, Sequence[str]] | None = None,
                  model: type[BaseModel] = PipelineParams) -> list[inspect.Parameter]:
    """One keyword-only typer option per field of ``model`` named in ``names``.

    ``flags`` gives a field option names of its own (e.g. ``--data`` for
    ``source``, a short ``-f``); else typer derives ``--field-name``. Enums stay
    enums (typer lists and checks their choices); literals become their values'
    type, which typer knows, and pydantic checks the value.
    """
    flags = flags or {}
    unknown = set(flags) - set(model.model_fields)
    if unknown:
        raise KeyError(f"flags for unknown fields: {sorted(unknown)}")
    params = []
    for name in names:
        field = model.model_fields[name]  # KeyError names a misspelt field at import
        option = typer.Option(*flags.get(name, ()), help=field.description)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                        default=field.get_default(call_default_factory=True),
                                        annotation=Annotated[_cli_type(field), option]))
    return params


def _cli_type(field: FieldInfo) -> Any:
    """The type typer parses an option as: a field's ``choices`` (json_schema_extra) as
    an enum, so that typer lists and checks them; a literal as its values' type."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    choices = extra.get("choices")
    if isinstance(choices, list):
        members = {str(c): str(c) for c in choices}
        return Enum("Choices", members, type=str)
    kind = field.annotation
    return plain_type(kind) if get_origin(kind) is Literal else kind


def with_params(names: Iterable[str], flags: Mapping[str, Sequence[str]] | None = None,
                model: type[BaseModel] = PipelineParams) -> Callable[[F], F]:
    """Decorate a command taking ``**values``: typer sees the fields' options too.

    The fields come first, then the command's own options; a name used by both
    is refused, since typer would pass only one of them.
    """
    def apply(command: F) -> F:
        own = inspect.signature(command, eval_str=True)
        kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own.parameters.values()
                if p.kind is not inspect.Parameter.VAR_KEYWORD]
        fields = field_options(names, flags, model)
        clash = {p.name for p in kept} & {p.name for p in fields}
        if clash:
            raise ValueError(f"{command.__name__}: options {sorted(clash)} are also fields")
        command.__signature__ = own.replace(  # type: ignore[attr-defined]
            parameters=[*fields, *kept])
        return command
    return apply


def all_but(*hidden: str, model: type[BaseModel] = PipelineParams) -> list[str]:
    """Every field of ``model`` except ``hidden``, in the fields' order."""
    unknown = set(hidden) - set(model.model_fields)
    if unknown:
        raise KeyError(f"unknown fields: {sorted(unknown)}")
    return [name for name in model.model_fields if name not in hidden]
