"""Runs a script's entry function as a strict command line and turns user errors into one clean line.

Every script calls `run(fn)`, or `run("package.module:fn")`, which reads fn's signature from the
source and imports the module (and its torch) only once the flags are checked. Before fn runs,
so before anything is loaded or written, the command line is checked against fn's signature: an
unknown flag (a close match is suggested), a stray argument or a value of the wrong type stops
with `error: <message>` on stderr and exit code 2. A `UserError` raised anywhere below fn ends
the same way, never with a traceback. `--help` (or `-h`) prints the script's usage and every
flag with its default and description, and exits 0.

The syntax is fire's: `--flag value`, `--flag=value`, `--flag-name` for `--flag_name`, a bare
`--flag` for True and `--noflag` for False. Values are parsed as fire parses them (Python
literals; `a,b` becomes a tuple; other text stays text; a function's `fire.decorators.SetParseFns`
is honoured), then checked against the parameter's annotation or, without one, the type of its
default: a bool takes True or False, an int an integer, a float a number, and None is accepted
where it is the default. Parameters without a default take the positional arguments, in order
(`download_data.py alpaca`), or flags like the others.

Every script also takes `--config FILE` (YAML or JSON: a mapping of flag names to values, typed as
the flags are); flags on the command line override the file.

The entry function's docstring describes every parameter in a Google-style `Args:` section;
`--help` shows the descriptions and tests/test_cli.py fails if a parameter has none:

    def main(out: str = "data/CoT_data.json", seed: int = 42):
        \"\"\"Formats the FLAN CoT TSVs into one JSON list.

        Args:
            out: where the JSON list is written.
            seed: seeds the draw of templates; a description may go on
                over lines indented deeper than its name.
        \"\"\"

Each entry is `name: description` (the parameter's name, a colon, a space), indented 4 spaces
deeper than `Args:`; the section ends at the first blank line or the first line indented no
deeper than `Args:`. The script's usage is the module docstring of the script that was run.
"""

import ast
import functools
import difflib
import importlib
import importlib.util
import inspect
import os
import logging
import re
import sys
import warnings
from pathlib import Path

import fire

# Noise from the stack on every run: peft calls a renamed transformers method, and bitsandbytes
# on a CPU machine asks for an optional kernels package when peft imports it.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda r: "kernels-community" not in r.getMessage())

TYPE_NAMES = {bool: "True or False", int: "an integer", float: "a number"}


class UserError(Exception):
    """Bad input from the user (file, record, field, flag): reported in one line."""


def fail(message: str, code: int = 2):
    # A progress bar the error cut short (the Trainer's) ends its line first, so that the error has one of its own.
    for bar in list(getattr(getattr(sys.modules.get("tqdm"), "tqdm", None), "_instances", ())):
        bar.close()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(entry, flags: str | None = None):
    """Check the command line against the entry function, then call it.

    entry is a function, or "package.module:function" to check the flags before that module's
    imports (torch, for one) are paid for. flags, "package.module:Class", names a config dataclass
    (alpaca_cot/config.py) whose fields are the flags, when the entry takes its flags from one.
    """
    argv = sys.argv[1:]
    shape = _shape(entry, flags)
    if "--help" in argv or "-h" in argv:
        try:
            print(usage(shape), flush=True)
        except BrokenPipeError:  # --help | head: the reader left; nothing is wrong
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    try:
        argv, config_file = _config_flag(argv) if "config" not in _flags(shape) else (argv, None)
        kwargs = parse_argv(shape, argv)
        if config_file is not None:
            from .config import read_config_file

            kwargs = {**read_config_file(config_file, shape), **kwargs}  # the command line wins
        fn = entry if callable(entry) else getattr(importlib.import_module(entry.split(":")[0]), entry.split(":")[1])
        exit_on_interrupt(fn)(**kwargs)  # whatever fn returns is for Python callers, not for the command line
    except UserError as e:
        fail(str(e))


def _shape(entry, flags):
    """What the command line is checked against: the entry's signature, or its config dataclass's fields."""
    if flags is not None:
        from .config import entry as config_entry

        module, name = flags.split(":")
        return config_entry(getattr(importlib.import_module(module), name))
    return entry if callable(entry) else signature_only(*entry.split(":"))


CONFIG_HELP = "a YAML or JSON file of flag values (name: value); flags given on the command line override it"


def _config_flag(argv: list[str]) -> tuple[list[str], str | None]:
    """argv without `--config FILE` (or `--config=FILE`), and FILE."""
    for i, token in enumerate(argv):
        if token == "--config" or token.startswith("--config="):
            if "=" in token:
                return argv[:i] + argv[i + 1:], token.partition("=")[2]
            if i + 1 == len(argv) or _is_flag(argv[i + 1]):
                raise UserError("--config takes a file: --config run.yaml")
            return argv[:i] + argv[i + 2:], argv[i + 1]
    return argv, None


class lazy_import:  # noqa: N801 (used like a function: torch = lazy_import("torch"))
    """A module imported on first use: `torch = lazy_import("torch")` at a script's top keeps the seconds of
    `import torch` out of the flag check (run() checks the flags first), and `torch.x` works as before."""
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self.__dict__["_name"]), attr)


def exit_on_interrupt(fn):
    """Ctrl-C anywhere in a script: one line and exit code 130 (temporary files are removed on the way)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            print(file=sys.stderr)
            fail("interrupted", 130)

    return wrapped


def as_list(value) -> list[str]:
    """A comma-separated flag as a list: the command line hands over "a,b" as a tuple, Python callers
    as a string or a list; blanks and surrounding brackets or quotes are dropped."""
    items = value if isinstance(value, (list, tuple)) else str(value).strip("[]").split(",")
    return [str(i).strip().strip("'\"").strip() for i in items if str(i).strip().strip("'\"").strip()]


def _function_node(module: str, name: str) -> ast.FunctionDef:
    """module.name's def, read from the module's source without importing it."""
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8"))
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def signature_only(module: str, name: str):
    """A function with the signature and docstring of module.name, without importing module.

    The def is compiled alone, body dropped. A decorated function, or one whose defaults or
    annotations need the module's names, is imported after all.
    """
    node = _function_node(module, name)
    path = importlib.util.find_spec(module).origin
    if node.decorator_list:
        return getattr(importlib.import_module(module), name)
    node.body = [ast.Expr(ast.Constant(ast.get_docstring(node, clean=False)))]
    namespace = {}
    try:
        exec(compile(ast.fix_missing_locations(ast.Module([node], type_ignores=[])), path, "exec"), namespace)
    except NameError:
        return getattr(importlib.import_module(module), name)
    return namespace[name]


def _is_flag(token: str) -> bool:
    # As fire decides: "-1" and "-0.5" are values, "-x" and "--x" are flags.
    return token.startswith("--") or re.match(r"-[a-zA-Z]", token) is not None


def _flags(fn) -> dict[str, inspect.Parameter]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p for name, p in inspect.signature(fn).parameters.items() if p.kind in kinds}


def _unknown(key: str, flags) -> UserError:
    close = difflib.get_close_matches(key, flags, n=1)
    hint = f"did you mean --{close[0]}?" if close else "see --help"
    return UserError(f"unknown flag --{key}; {hint}")


def parse_argv(fn, argv: list[str]) -> dict:
    """fn's keyword arguments from the command line; a UserError for anything fn cannot take."""
    flags = _flags(fn)
    kwargs, positional, i = {}, [], 0
    while i < len(argv):
        token, i = argv[i], i + 1
        if not _is_flag(token):
            positional.append(token)
            continue
        key, equals, text = token.lstrip("-").partition("=")
        key = key.replace("-", "_")
        bare = not equals and (i == len(argv) or _is_flag(argv[i]))
        if key not in flags and bare and key.startswith("no") and key[2:] in flags:
            key, text = key[2:], "False"
        elif key not in flags:
            raise _unknown(key, flags)
        elif bare:
            text = "True"
        elif not equals:
            text, i = argv[i], i + 1
        kwargs[key] = _value(fn, flags[key], text)
    required = [name for name, p in flags.items() if p.default is p.empty and name not in kwargs]
    if len(positional) > len(required):
        raise UserError(f"unexpected argument {positional[len(required)]!r}; flags start with -- (see --help)")
    kwargs.update((name, _value(fn, flags[name], text)) for name, text in zip(required, positional))
    if len(required) > len(positional):
        raise UserError(f"missing argument {required[len(positional)]} (see --help)")
    return kwargs


def expected_type(param: inspect.Parameter):
    for kind in (param.annotation, type(param.default)):
        if kind in TYPE_NAMES:
            return kind
    return None


def fits_type(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    return isinstance(value, int if kind is int else (int, float)) and not isinstance(value, bool)


def _value(fn, param: inspect.Parameter, text: str):
    """text parsed as fire would, and checked against the parameter's type."""
    parse_fns = fire.decorators.GetParseFns(fn)
    if param.name not in parse_fns["named"] and (param.annotation is str or isinstance(param.default, str)):
        return None if text == "None" and param.default is None else text  # a path like 2024 stays text
    parse = parse_fns["named"].get(param.name) or parse_fns["default"] or fire.parser.DefaultParseValue
    value = parse(text)
    kind = expected_type(param)
    if kind is None or (value is None and param.default is None):
        return value
    if not fits_type(value, kind):
        raise UserError(f"--{param.name} takes {TYPE_NAMES[kind]}, got {text!r}")
    return value


def arg_descriptions(fn) -> dict[str, str]:
    """{parameter: description} from the `Args:` section of fn's docstring (see the module docstring)."""
    descriptions, name, indent = {}, None, None
    for line in (inspect.getdoc(fn) or "").splitlines():
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth if line.strip() == "Args:" else None
            continue
        if not line.strip() or depth <= indent:
            break
        entry = re.fullmatch(r"(\w+): (.*)", line.strip())
        if depth == indent + 4 and entry:
            name = entry[1]
            descriptions[name] = entry[2].strip()
        elif name:
            descriptions[name] += " " + line.strip()
    return descriptions


def _shown(default) -> str:
    if isinstance(default, (tuple, list)):
        return ",".join(map(str, default))
    return str(default)


def usage(fn) -> str:
    """The running script's docstring, then one line per flag: its default and its description."""
    described = arg_descriptions(fn)
    names = {name: name if p.default is p.empty else f"--{name}={_shown(p.default)}"
             for name, p in _flags(fn).items()}
    if "config" not in names:  # a script whose own flag is called config keeps it
        names["config"] = "--config=None"
        described["config"] = CONFIG_HELP
    width = max(map(len, names.values()))
    lines = [f"  {shown:<{width}}  {described.get(name, '')}".rstrip() for name, shown in names.items()]
    doc = inspect.getdoc(sys.modules["__main__"]) or inspect.getdoc(fn) or ""
    return "\n".join([doc, "", "arguments (flags with their defaults):", *lines])
