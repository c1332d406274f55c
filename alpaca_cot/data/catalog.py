"""The data catalogue: what a `--data` name means. data/catalog.json lists every name, where its records
come from and what they hold; `resolve_specs` turns a `--data` value into the files it names.

Each entry names the file it becomes in data/, its source (a hub dataset with revision, config, split
and optional data_files; the FLAN CoT builder; or a file that ships with the project), its format
(alpaca columns with a column map, ShareGPT conversations, prompt/completion, or dialogue text with
turn markers), its languages, task kind, licence, record count and citation. Facts that could not be
checked offline are listed in the entry's `unverified`. Adding a dataset is adding an entry.

`--data` names resolve here and nowhere else: a name in the catalogue (`alpaca`, `belle`, `cot`, `demo`
and the rest), names joined by `-` in any order (`alpaca-belle-cot`), a path to a `.json` list or
`.jsonl` file, or several of these separated by commas. Any of them may end in `:N` (at most N records)
or `:W` (a weight such as 0.5 or 2, times its records); data.py draws those.
"""

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from alpaca_cot import DATA_DIR
from alpaca_cot.cli import UserError, as_list

CATALOG_PATH = DATA_DIR / "catalog.json"
FIELDS = ("file", "source", "format", "languages", "task", "license", "records", "citation", "unverified")
FORMATS = {"alpaca": ("instruction", "output"), "prompt_completion": ("prompt", "completion"),
           "sharegpt": ("messages",), "dialogue_text": ("text",), "flan_cot": ()}
TASKS = ("general", "cot", "math", "code", "chat", "finance")
SOURCE_KINDS = ("hub", "builder", "local")


@dataclass(frozen=True)
class Source:
    file: str  # relative to data/
    how_to_get: str
    entry: dict = field(default_factory=dict, compare=False)


def _problem(entry: dict) -> str | None:
    """What is wrong with one entry, or None."""
    missing = [f for f in FIELDS if f not in entry]
    if missing:
        return f"field(s) {', '.join(missing)} missing"
    if entry["format"] not in FORMATS:
        return f"format {entry['format']!r} is not one of {', '.join(FORMATS)}"
    needed = [c for c in FORMATS[entry["format"]] if c not in entry.get("columns", {})]
    if needed:
        return f"format {entry['format']} needs columns {', '.join(needed)}"
    if entry["task"] not in TASKS:
        return f"task {entry['task']!r} is not one of {', '.join(TASKS)}"
    kinds = [k for k in SOURCE_KINDS if k in entry["source"]]
    if len(kinds) != 1:
        return f"source must have exactly one of {', '.join(SOURCE_KINDS)}"
    if entry["format"] == "dialogue_text" and set(entry.get("markers", {})) != {"user", "assistant"}:
        return "format dialogue_text needs markers {user, assistant}"
    return None


def how_to_get(name: str, entry: dict) -> str:
    source = entry["source"]
    if "hub" in source:
        return f"run `python scripts/download_data.py {name}` (hub dataset {source['hub']})"
    if source.get("builder") == "format_cot":
        return f"run `python scripts/format_cot.py --out data/{entry['file']}` (the 9 FLAN CoT sets)"
    return f"it ships with the project: restore it with `git checkout {source['local']}`"


def load_catalog(path: Path = CATALOG_PATH) -> dict[str, dict]:
    """{name: entry}, in the file's order; a UserError naming the entry and field of any bad one."""
    try:
        sources = json.loads(Path(path).read_text(encoding="utf-8"))["sources"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: cannot read the catalogue ({type(e).__name__}: {e})") from None
    for name, entry in sources.items():
        if any(c in name for c in "-:,/"):
            raise UserError(f"{path}: entry {name!r}: names may not hold - : , or /")
        if (why := _problem(entry)) is not None:
            raise UserError(f"{path}: entry {name!r}: {why}")
    return sources


def registry(path: Path | None = None) -> dict[str, Source]:
    """{name: Source} of the catalogue (data/catalog.json by default), read when first asked for, not at import:
    a broken catalogue is then one line from the command that needs it."""
    return _registry(Path(path or CATALOG_PATH))


@functools.cache
def _registry(path: Path) -> dict[str, Source]:
    return {name: Source(e["file"], how_to_get(name, e), e) for name, e in load_catalog(path).items()}


def __getattr__(name):  # catalog.REGISTRY: the default catalogue, read on first use
    if name == "REGISTRY":
        return registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_path(item: str) -> bool:
    return item.endswith((".json", ".jsonl")) or "/" in item or "\\" in item


def split_spec(item: str) -> tuple[str, int | float | None]:
    """`alpaca:2000` -> ("alpaca", 2000), `cot:0.5` -> ("cot", 0.5), `cot` -> ("cot", None)."""
    head, colon, tail = item.rpartition(":")
    if not colon or not head or "/" in tail or "\\" in tail:
        return item, None
    try:
        spec = int(tail) if tail.strip().isdigit() else float(tail)
    except ValueError:
        raise UserError(f"--data {item!r}: after ':' comes a record count (2000) or a weight (0.5, 2)") from None
    if spec <= 0 or spec != spec or spec == float("inf"):
        raise UserError(f"--data {item!r}: the count or weight after ':' must be > 0")
    return head, spec


def resolve(data, data_dir: Path = DATA_DIR) -> list[Path]:
    """Turn a --data value into the list of files it names, in order, without duplicates."""
    return [path for path, _ in resolve_specs(data, data_dir)]


def resolve_specs(data, data_dir: Path = DATA_DIR) -> list[tuple[Path, int | float | None]]:
    """The files --data names, each with its count or weight (None: all records), in order, each once."""
    items = as_list(data)
    REGISTRY = registry()
    if not items:
        raise UserError("--data is empty; name a dataset (" + ", ".join(REGISTRY) + ") or a .json/.jsonl file")
    paths = []
    for item in items:
        if _is_path(item) or _is_path(item.rpartition(":")[0]):
            item, spec = split_spec(item)
            path = Path(item).expanduser()
            check_readable(path, "data file")
            paths.append((path, spec))
            continue
        for piece in re.split(r"(?<!:)-", item):  # demo:-1 is one piece, with a count that is refused
            name, spec = split_spec(piece)
            if name not in REGISTRY:
                raise UserError(f"unknown dataset {name!r} in --data {item!r}; known: {', '.join(REGISTRY)}, "
                                "combinations like alpaca-belle-cot, or paths to .json/.jsonl files")
            source = REGISTRY[name]
            path = Path(data_dir) / source.file
            if not path.is_file():
                raise UserError(f"dataset {name!r} needs {path}, which is missing: {source.how_to_get}")
            paths.append((path, spec))
    unique = {}
    for path, spec in paths:  # the same file named twice (demo,data/demo.json) is read once
        first = unique.setdefault(path.resolve(), (path, spec))
        if first[1] != spec:
            raise UserError(f"--data {data_text(data)!r} names {path} twice, with {_spec_text(first[1])} and "
                            f"{_spec_text(spec)}; name each source once")
    return list(unique.values())


def data_text(data) -> str:
    return ",".join(as_list(data))


def _spec_text(spec) -> str:
    return "all its records" if spec is None else f"':{spec}'"


def check_readable(path: Path, what: str):
    """A one-line error for a path that is missing, a folder, or not a regular file (a FIFO, a device)."""
    if not path.exists():
        raise UserError(f"{what} {path} not found")
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a regular file")


def name_of(data) -> str:
    """A short name for output folders: `alpaca-cot` stays, paths become their stem, and mixture
    specs (`alpaca:2000`) drop their count or weight."""
    names = [split_spec(i)[0] for i in as_list(data)]
    return "-".join(Path(n).stem if _is_path(n) else n for n in names)
