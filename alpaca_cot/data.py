"""The data registry and the loader that validates every record.

`--data` names resolve here and nowhere else: a name in the catalogue (data/catalog.json:
`alpaca`, `belle`, `cot`, `demo` and the rest), names joined by `-` in any order
(`alpaca-belle-cot`), a path to a `.json` list or `.jsonl` file, or several of these separated
by commas. Any of them may end in `:N` (at most N records) or `:W` (a weight such as 0.5 or 2,
times its records); alpaca_cot/mixture.py draws those.
"""

import json
from pathlib import Path

from . import DATA_DIR
from .catalog import registry
from .cli import UserError, as_list

REGISTRY = registry()

# Placeholders some Alpaca versions use for "no input".
NO_INPUT = {"noinput", "<noinput>", "no input"}


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
        for piece in item.split("-"):
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
        unique.setdefault(path.resolve(), (path, spec))
    return list(unique.values())


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


def _loads(text: str, path: Path, place: str = ""):
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{path}: {place}JSON nested too deeply to read") from None


def parse(path: Path) -> list[tuple[str, object]]:
    """The raw records of one file, each with its place ('record 3' or 'line 4') for messages."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM is not an error
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror or type(e).__name__})") from None
    if path.suffix != ".jsonl":
        try:
            obj = _loads(text, path)
        except json.JSONDecodeError as e:
            # Some `.json` files in the wild are JSON Lines (BELLE's eval set): read those as such.
            if not (e.msg == "Extra data" and text.lstrip().startswith("{")):
                raise UserError(f"{path}: not valid JSON ({e.msg}; line {e.lineno} column {e.colno})") from None
        else:
            if not isinstance(obj, list):
                raise UserError(f"{path}: expected a JSON list of records, got a {type(obj).__name__}")
            return [(f"record {i}", r) for i, r in enumerate(obj)]
    rows = []
    # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON strings.
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append((f"line {n}", _loads(line, path, f"line {n}: ")))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: line {n}: not valid JSON ({e.msg}; column {e.colno})") from None
    return rows


def _not_encodable(field: str, value: str) -> str | None:
    """A lone surrogate (a JSON escape like \\ud800 with no pair) cannot be tokenised or written as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"field '{field}' holds a lone surrogate ({value[e.start]!a}) at character {e.start}"
    return None


def _check(record, require_output: bool = True) -> tuple[dict | None, str | None]:
    """A clean {instruction, input, output} record, or the reason it is bad."""
    if not isinstance(record, dict):
        return None, f"expected an object with instruction/input/output, got {type(record).__name__}"
    clean = {}
    for field in ("instruction", "output"):
        value = record.get(field)
        if field == "output" and not require_output and (value is None or str(value).strip() == ""):
            continue  # generation: no reference answer
        if value is None:
            return None, f"field '{field}' is missing"
        if not isinstance(value, str):
            return None, f"field '{field}' must be a string, got {type(value).__name__}"
        if not value.strip():
            return None, f"field '{field}' is empty"
        if (why := _not_encodable(field, value)) is not None:
            return None, why
        clean[field] = value
    value = record.get("input")
    if value is None:
        value = ""
    if not isinstance(value, str):
        return None, f"field 'input' must be a string, got {type(value).__name__}"
    if (why := _not_encodable("input", value)) is not None:
        return None, why
    clean["input"] = "" if value.strip().lower() in NO_INPUT else value
    history, why = _check_history(record.get("history"))
    if why is not None:
        return None, why
    if history:
        clean["history"] = history
    return clean, None


def _check_history(history) -> tuple[list | None, str | None]:
    """Earlier turns of a conversation: a list of [user, assistant] pairs of non-empty strings."""
    if history is None:
        return None, None
    if not isinstance(history, list):
        return None, f"field 'history' must be a list of [user, assistant] pairs, got {type(history).__name__}"
    for i, turn in enumerate(history):
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            return None, f"field 'history' turn {i} must be a [user, assistant] pair of strings"
        if not all(t.strip() for t in turn):
            return None, f"field 'history' turn {i} has an empty side"
        for side, text in zip(("user", "assistant"), turn):
            if (why := _not_encodable(f"history[{i}].{side}", text)) is not None:
                return None, why
    return [list(turn) for turn in history], None


def load_file(path: Path, skip_bad_records: bool = False, require_output: bool = True) -> tuple[list[dict], int]:
    """Valid records of one file and how many bad ones were skipped (generation needs no output)."""
    records, skipped = [], 0
    for place, raw in parse(Path(path)):
        clean, why = _check(raw, require_output)
        if clean is None:
            if not skip_bad_records:
                raise UserError(f"{path}: {place}: {why} (pass --skip_bad_records to skip such records)")
            skipped += 1
            continue
        records.append(clean)
    return records, skipped


def load(data, skip_bad_records: bool = False, data_dir: Path = DATA_DIR, log=print, seed: int = 42) -> dict[str, list]:
    """All records that --data names, counts and weights drawn with seed, as columns (see to_columns)."""
    from .mixture import prepare

    return prepare(data, seed=seed, skip_bad_records=skip_bad_records, data_dir=data_dir, log=log)[1]


def load_sources(paths: list[Path], skip_bad_records: bool = False, log=print) -> list[tuple[Path, list[dict]]]:
    """The valid records of each file, in order, logging how many bad ones each skipped."""
    sources = []
    for path in paths:
        records, skipped = load_file(path, skip_bad_records)
        if skipped:
            log(f"{path}: skipped {skipped} bad records")
        sources.append((path, records))
    return sources


def to_columns(sources: list[tuple[Path, list[dict]]], label=None) -> dict[str, list]:
    """Columns instruction, input, output, source (the file's stem), and history when any record has one."""
    columns = {"instruction": [], "input": [], "output": [], "source": []}
    with_history = any("history" in r for _, records in sources for r in records)
    if with_history:
        columns["history"] = []
    for path, records in sources:
        for r in records:
            for k in ("instruction", "input", "output"):
                columns[k].append(r[k])
            if with_history:
                columns["history"].append(r.get("history", []))
        columns["source"].extend([path.stem] * len(records))
    if not columns["output"]:
        raise UserError(f"--data {label or ','.join(str(p) for p, _ in sources)!r} holds no usable records")
    return columns


def load_files(paths: list[Path], skip_bad_records: bool = False, log=print, label=None) -> dict[str, list]:
    """The records of already resolved files, as columns (see to_columns)."""
    return to_columns(load_sources(paths, skip_bad_records, log), label)
