"""Typed configuration: a script's flags as one dataclass, and a configuration file under the flags.

Each field of a config dataclass is made by `flag(default, help, rule=..., defines_run=...)`: its default,
the help `--help` shows, the range its value must be in (a `Rule`, checked before any work) and whether it
defines the run (what finetune records in run.json, so that a resume with another value is refused). The
dataclass is the one place a flag lives: `entry(Config)` turns it into the signature and `Args:` docstring
that alpaca_cot/cli.py checks the command line against and prints as `--help`, without importing torch.

`--config run.yaml` (or .json), which cli.run accepts for every script, gives flag values as a mapping; flags
on the command line override it. `read_config_file` reads it: one line naming the file and the key for an
unknown key or a value of the wrong type.
"""

import dataclasses
import difflib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .cli import TYPE_NAMES, UserError, expected_type, fits_type


@dataclass(frozen=True)
class Rule:
    """What a flag's value must be: `test(value)` is true, and `text` says it in the error line."""
    test: Callable
    text: str


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


POSITIVE = Rule(lambda v: number(v) and v > 0, "> 0")
NON_NEGATIVE = Rule(lambda v: number(v) and v >= 0, ">= 0")
POSITIVE_INT = Rule(lambda v: integer(v) and v > 0, "a positive integer")
COUNT = Rule(lambda v: integer(v) and v >= 0, "an integer >= 0")
AT_LEAST_ONE = Rule(lambda v: integer(v) and v >= 1, "an integer >= 1")
FRACTION = Rule(lambda v: number(v) and 0 <= v < 1, "in [0, 1)")
PROBABILITY = Rule(lambda v: number(v) and 0 < v <= 1, "in (0, 1]")

# defines_run's third value: a field added after runs were recorded defines a run only when it is not at its
# default, so that the records of earlier runs (which lack it) still match.
UNLESS_DEFAULT = "unless_default"


def flag(default, help: str, rule: Rule | None = None, defines_run: bool | str = False, record_as: str | None = None,
         text: bool = False):
    """A config field: default, help, range rule, and whether (True, False or UNLESS_DEFAULT) it defines the
    run; record_as names it otherwise in the run's record; text keeps the command line's value as written
    (an instruction "None" or "red, green" stays that text)."""
    return field(default=default, metadata=dict(help=help, rule=rule, defines_run=defines_run, record_as=record_as,
                                                text=text))


def fields(config) -> list[dataclasses.Field]:
    return list(dataclasses.fields(config))


def require(rules: dict, values: dict):
    """The first flag of rules ({name: Rule}) whose value in values breaks its rule: one line."""
    for name, rule in rules.items():
        if not rule.test(values[name]):
            raise UserError(f"--{name} must be {rule.text}, got {values[name]!r}")


def check(config):
    """Every field of config against its rule (require); None passes where it is the default (the recipe or
    the run decides it later)."""
    require({f.name: f.metadata["rule"] for f in fields(config) if f.metadata.get("rule") is not None
             and not (getattr(config, f.name) is None and f.default is None)}, vars(config))


def run_defining(config) -> dict:
    """{recorded name: value} of the fields that define the run."""
    out = {}
    for f in fields(config):
        how, value = f.metadata.get("defines_run"), getattr(config, f.name)
        if how is True or (how == UNLESS_DEFAULT and value != f.default):
            out[f.metadata.get("record_as") or f.name] = value
    return out


def _annotation(f: dataclasses.Field):
    return f.type if f.type in TYPE_NAMES or f.type is str else inspect.Parameter.empty


def signature(config_class) -> inspect.Signature:
    """config_class's fields as keyword parameters with their defaults and types."""
    return inspect.Signature([inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                                annotation=_annotation(f)) for f in fields(config_class)])


def entry(config_class, doc: str = ""):
    """A function with config_class's fields as its keyword parameters and an `Args:` section of their help:
    what cli.run checks a command line against, and what `--help` prints."""
    args = "\n".join(f"    {f.name}: {f.metadata.get('help', '')}" for f in fields(config_class))

    def shape(**kwargs):
        return config_class(**kwargs)

    shape.__name__ = config_class.__name__
    shape.__signature__ = signature(config_class)
    shape.__doc__ = f"{doc or inspect.getdoc(config_class)}\n\nArgs:\n{args}\n"
    return text_flags(config_class)(shape)


def text_flags(config_class):
    """A decorator that has the command line keep config_class's text fields as written (cli reads fire's
    parse functions)."""
    import fire

    return fire.decorators.SetParseFns(**{f.name: str for f in fields(config_class) if f.metadata.get("text")})


def read_config_file(path, shape) -> dict:
    """The flag values a --config file gives (YAML or JSON, a mapping of flag names), checked against shape's
    parameters: an unknown key or a value of the wrong type is one line naming the file and the key."""
    path = Path(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"--config {path}: {e.strerror or e}") from None
    try:
        if path.suffix == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except ValueError as e:  # json's and yaml's parse errors are ValueErrors (yaml.YAMLError is not)
        raise UserError(f"--config {path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {e}") from None
    except Exception as e:  # yaml.YAMLError
        raise UserError(f"--config {path}: not valid YAML: {str(e).splitlines()[0]}") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise UserError(f"--config {path}: expected a mapping of flag names to values, got {type(values).__name__}")
    params = inspect.signature(shape).parameters
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in params or name == "config":
            close = difflib.get_close_matches(name, params, n=1)
            raise UserError(f"--config {path}: unknown key {key!r}" + (f"; did you mean {close[0]}?" if close else ""))
        out[name] = _typed(path, params[name], value)
    return out


def _typed(path, param: inspect.Parameter, value):
    """A file's value for param: lists become what `a,b` on the command line becomes (a tuple); text flags
    take any scalar as text; typed ones must fit their type, as on the command line."""
    if isinstance(value, list):
        return tuple(value)
    kind = expected_type(param)
    if value is None or kind is None:
        return str(value) if (param.annotation is str or isinstance(param.default, str)) and value is not None \
            and not isinstance(value, (dict, bool)) else value
    if not fits_type(value, kind):
        raise UserError(f"--config {path}: {param.name} takes {TYPE_NAMES[kind]}, got {value!r}")
    return value
