"""The dataset catalogue, data/catalog.json: every `--data` name, where its records come from and what they hold.

Each entry names the file it becomes in data/, its source (a hub dataset with revision, config, split
and optional data_files; the FLAN CoT builder; or a file that ships with the project), its format
(alpaca columns with a column map, ShareGPT conversations, prompt/completion, or dialogue text with
turn markers), its languages, task kind, licence, record count and citation. Facts that could not be
checked offline are listed in the entry's `unverified`. Adding a dataset is adding an entry.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import DATA_DIR
from .cli import UserError

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


def registry(path: Path = CATALOG_PATH) -> dict[str, Source]:
    return {name: Source(e["file"], how_to_get(name, e), e) for name, e in load_catalog(path).items()}
