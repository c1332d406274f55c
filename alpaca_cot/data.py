"""The data registry and the loader that validates every record.

`--data` names resolve here and nowhere else: a registered name (`alpaca`, `belle`,
`cot`, `demo`), names joined by `-` in any order (`alpaca-belle-cot`), a path to a
`.json` list or `.jsonl` file, or several of these separated by commas.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from . import DATA_DIR
from .cli import UserError


@dataclass(frozen=True)
class Source:
    file: str  # relative to data/
    how_to_get: str


REGISTRY = {
    "alpaca": Source("alpaca_data_cleaned.json",
                     "run `python scripts/download_data.py alpaca` (hub dataset yahma/alpaca-cleaned)"),
    "belle": Source("belle_data_cn.json",
                    "run `python scripts/download_data.py belle` (hub dataset BelleGroup/train_0.5M_CN)"),
    "cot": Source("CoT_data.json",
                  "run `python scripts/format_cot.py --out data/CoT_data.json` (the 9 FLAN CoT sets)"),
    "demo": Source("demo.json", "it ships with the project: restore it with `git checkout data/demo.json`"),
}

# Placeholders some Alpaca versions use for "no input".
NO_INPUT = {"noinput", "<noinput>", "no input"}


def _is_path(item: str) -> bool:
    return item.endswith((".json", ".jsonl")) or "/" in item or "\\" in item


def resolve(data, data_dir: Path = DATA_DIR) -> list[Path]:
    """Turn a --data value into the list of files it names, in order, without duplicates."""
    items = list(data) if isinstance(data, (list, tuple)) else str(data).split(",")
    items = [str(i).strip() for i in items if str(i).strip()]
    if not items:
        raise UserError("--data is empty; name a dataset (" + ", ".join(REGISTRY) + ") or a .json/.jsonl file")
    paths = []
    for item in items:
        if _is_path(item):
            path = Path(item).expanduser()
            check_readable(path, "data file")
            paths.append(path)
            continue
        for name in item.split("-"):
            if name not in REGISTRY:
                raise UserError(f"unknown dataset {name!r} in --data {item!r}; known: {', '.join(REGISTRY)}, "
                                "combinations like alpaca-belle-cot, or paths to .json/.jsonl files")
            source = REGISTRY[name]
            path = Path(data_dir) / source.file
            if not path.is_file():
                raise UserError(f"dataset {name!r} needs {path}, which is missing: {source.how_to_get}")
            paths.append(path)
    unique = {}
    for path in paths:  # the same file named twice (demo,data/demo.json) is read once
        unique.setdefault(path.resolve(), path)
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
    """A short name for output folders: `alpaca-cot` stays, paths become their stem."""
    items = list(data) if isinstance(data, (list, tuple)) else str(data).split(",")
    return "-".join(Path(str(i).strip()).stem if _is_path(str(i)) else str(i).strip() for i in items)


def _loads(text: str, path: Path, place: str = ""):
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{path}: {place}JSON nested too deeply to read") from None


def _parse(path: Path) -> list[tuple[str, object]]:
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
    return clean, None


def load_file(path: Path, skip_bad_records: bool = False, require_output: bool = True) -> tuple[list[dict], int]:
    """Valid records of one file and how many bad ones were skipped (generation needs no output)."""
    records, skipped = [], 0
    for place, raw in _parse(Path(path)):
        clean, why = _check(raw, require_output)
        if clean is None:
            if not skip_bad_records:
                raise UserError(f"{path}: {place}: {why} (pass --skip_bad_records to skip such records)")
            skipped += 1
            continue
        records.append(clean)
    return records, skipped


def load(data, skip_bad_records: bool = False, data_dir: Path = DATA_DIR, log=print) -> dict[str, list]:
    """All records that --data names, as columns (instruction, input, output, source)."""
    return load_files(resolve(data, data_dir), skip_bad_records, log, label=data)


def load_files(paths: list[Path], skip_bad_records: bool = False, log=print, label=None) -> dict[str, list]:
    """The records of already resolved files, as columns (instruction, input, output, source)."""
    columns = {"instruction": [], "input": [], "output": [], "source": []}
    for path in paths:
        records, skipped = load_file(path, skip_bad_records)
        if skipped:
            log(f"{path}: skipped {skipped} bad records")
        for r in records:
            for k in ("instruction", "input", "output"):
                columns[k].append(r[k])
        columns["source"].extend([path.stem] * len(records))
    if not columns["output"]:
        raise UserError(f"--data {label or ','.join(map(str, paths))!r} holds no usable records")
    return columns
