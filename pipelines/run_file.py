"""Run files: ``twinflow run -c run.yaml`` and ``twinflow run --print-config``.

A run file holds options of ``twinflow run`` under their long names without the
dashes (``data``, ``epochs``, ``step-timeout``; ``step_timeout`` works too). The
keys are read off the command itself (its click options), so an option added to
``run`` can be written in a file without touching this module, and the pipeline
parameters among them are checked by the model the command checks them with,
:class:`~pipelines.params.PipelineParams`.

The file's values become the click context's ``default_map``: click then takes a
value from the command line first, then from an option's environment variable,
then from the file, then the default (the usual order of command line tools:
an exported ``MLFLOW_TRACKING_URI`` is a deliberate setting of this shell, a run
file a shared recipe). Whatever the source, every value then goes through the
same parsing and validation as one typed on the command line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from difflib import get_close_matches
from enum import Enum
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import typer
import yaml
from pydantic import BaseModel, ValidationError
from typer.core import TyperOption

from components.errors import ConfigError
from pipelines.params import PipelineParams

CONFIG_OPTION: Final = "--config"  # the run file itself: not a key of one
PRINT_CONFIG_OPTION: Final = "--print-config"
FILE_OPTIONS: Final = (CONFIG_OPTION, PRINT_CONFIG_OPTION)
#: The effective configuration, as logged on the parent run of every `twinflow run`.
RUN_CONFIG_ARTIFACT: Final = "run_config.yaml"
# Where a value came from, by click's ParameterSource names (typer vendors click, so
# the enum's class is typer's private one; its member names are click's API).
_ORIGINS: Final = {"COMMANDLINE": "the command line", "ENVIRONMENT": "the environment"}
_FROM_FILE: Final = "DEFAULT_MAP"


def option_keys(ctx: typer.Context) -> dict[str, TyperOption]:
    """The keys a run file may use for the running command: each option's long name
    without its dashes, mapped to the option (whose ``name`` is the parameter's)."""
    keys = {}
    for param in ctx.command.params:
        long = next((o for o in param.opts if o.startswith("--")), None)
        if isinstance(param, TyperOption) and long and long not in FILE_OPTIONS:
            keys[long.removeprefix("--")] = param
    return keys


def read_run_file(path: Path, ctx: typer.Context,
                  model: type[BaseModel] = PipelineParams) -> dict[str, Any]:
    """The values of run file ``path`` by parameter name, checked; ConfigError naming
    the file and the key on an unknown key or a bad value.

    Pipeline parameters are validated together by ``model`` (so a rule across two
    fields of the file applies too) and come back as plain JSON values; the
    command's other options are parsed as typer parses them from the command line.
    """
    keys = option_keys(ctx)
    chosen: dict[str, str] = {}  # parameter name -> the key as the file spells it
    values: dict[str, Any] = {}
    options: dict[str, TyperOption] = {}
    for key, value in _load(path).items():
        option = keys.get(_dashed(key))
        if option is None or option.name is None:
            raise ConfigError(f"{path}: {_unknown(key, keys)}")
        if option.name in chosen:
            raise ConfigError(f"{path}: '{key}' and '{chosen[option.name]}' are the same "
                              f"option; keep one")
        chosen[option.name], values[option.name], options[option.name] = key, value, option
    fields = {name: v for name, v in values.items() if name in model.model_fields}
    checked = _check_fields(path, fields, chosen, model)
    for name, value in values.items():
        if name not in fields:
            try:
                checked[name] = options[name].process_value(ctx, value)
            except typer.BadParameter as err:
                raise ConfigError(f"{path}: {chosen[name]}: {_reason(err.message)} "
                                  f"(got {value!r})") from None
    return checked


def _dashed(key: str) -> str:
    """A key as its option's long name: ``step_timeout`` and ``step-timeout`` alike."""
    return key.replace("_", "-")


def _load(path: Path) -> dict[str, Any]:
    """The file's mapping (an empty file is an empty one)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"run file {path} not found") from None
    except OSError as err:
        raise ConfigError(f"cannot read run file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: "
                          f"{getattr(err, 'problem', None) or err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{path}: a run file is a mapping of option names to values, "
                          f"e.g. 'epochs: 5'")
    return data


def _unknown(key: str, keys: Mapping[str, TyperOption]) -> str:
    """Why ``key`` is refused, with the key that was probably meant (a parameter's
    own name, e.g. ``source`` for ``data``, or a near spelling)."""
    by_name = {o.name: k for k, o in keys.items()}
    meant = by_name.get(key.replace("-", "_")) or next(
        iter(get_close_matches(_dashed(key), list(keys), n=1, cutoff=0.6)), None)
    hint = f"; did you mean '{meant}'?" if meant else ""
    return f"unknown key '{key}'{hint} (keys are the long options of twinflow run)"


def _reason(message: str) -> str:
    """pydantic's message without its 'Value error, ' prefix (a validator's own words)."""
    return message.removeprefix("Value error, ")


def _check_fields(path: Path, fields: dict[str, Any], spelt: Mapping[str, str],
                  model: type[BaseModel]) -> dict[str, Any]:
    """Validate the file's pipeline parameters with ``model``; their JSON values.

    A mapping or list given to a text field that holds JSON (``ingest-options``,
    ``model-options``...) is written as JSON, so YAML's own nesting can be used.
    """
    fields = {name: json.dumps(v) if isinstance(v, dict | list)
              and model.model_fields[name].annotation is str else v
              for name, v in fields.items()}
    try:
        valid = model.model_validate(fields)
    except ValidationError as err:
        parts = []
        for e in err.errors():
            if e["loc"]:  # one field's value
                name = str(e["loc"][0])
                parts.append(f"{spelt.get(name, name)}: {_reason(e['msg'])} "
                             f"(got {e.get('input')!r})")
            else:  # a rule across fields
                parts.append(_reason(e["msg"]))
        raise ConfigError(f"{path}: " + "; ".join(parts)) from None
    return valid.model_dump(mode="json", include=set(fields))


def effective_config(ctx: typer.Context) -> dict[str, Any]:
    """Every option of the running command by its run file key, as it will be used."""
    return {key: _plain(ctx.params[option.name]) for key, option in option_keys(ctx).items()
            if option.name in ctx.params}


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    return str(value) if isinstance(value, Path) else value


def config_yaml(ctx: typer.Context, redact: bool = False) -> str:
    """The effective configuration as a run file, with where each value came from as
    comments (``twinflow run -c`` of it runs the same again). ``redact`` hides the
    passwords of URIs (a PostgreSQL tracking store's), for a copy others can read."""
    config = effective_config(ctx)
    if redact:
        config = {k: without_password(v) for k, v in config.items()}
    run_file = next((ctx.params.get(p.name or "") for p in ctx.command.params
                     if CONFIG_OPTION in p.opts), None)
    origins = {**_ORIGINS, _FROM_FILE: str(run_file or "the run file")}
    lines = ["# twinflow run configuration; `twinflow run -c FILE` runs it again",
             "# (the command line and environment variables override a file's values)"]
    for source, where in origins.items():
        given = [k for k, o in option_keys(ctx).items() if k in config
                 and getattr(ctx.get_parameter_source(o.name or ""), "name", "") == source]
        if given:
            lines.append(f"# from {where}: {', '.join(given)}")
    body = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000)
    return "\n".join(lines) + "\n" + body


def without_password(value: Any) -> Any:
    """``value`` with the password of a URI in it masked (other values as they are)."""
    if not isinstance(value, str) or "://" not in value:
        return value
    parts = urlsplit(value)
    if not parts.password:
        return value
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def log_run_config(run_key: str, experiment: str, text: str) -> str:
    """Log ``text`` as ``RUN_CONFIG_ARTIFACT`` on the parent run of ``run_key`` (the
    configured store); a warning line if it could not be, else ''. After the run, by
    the CLI: the parent run is created by the pipeline's first task, and the task
    does not know the run file or the CLI's own options."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from components.tracking import find_pipeline_run

    try:
        run_id = find_pipeline_run(run_key, experiment)
        if run_id is None:
            return f"twinflow: warning: no parent run of {run_key} to log its configuration on"
        MlflowClient().log_text(run_id, text, RUN_CONFIG_ARTIFACT)
    except (MlflowException, OSError) as err:
        return f"twinflow: warning: could not log {RUN_CONFIG_ARTIFACT} on the run: {err}"
    return ""
