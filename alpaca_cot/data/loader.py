"""Records: every record that --data names, read and checked, and the training mixture drawn from them.

What a --data name means is catalog.py's. Here each file is read (JSON list or JSON Lines) and every
record checked; a bad record stops the run with its file and place, or is skipped and counted.

A file in any catalogue schema (BELLE's dialogue, ShareGPT conversations, prompt/completion, Dolly's
columns...) is converted as it is read: schemas.py decides which, convert.py converts.

The mixture (`load_mixture`): load, decontaminate, deduplicate, then draw each source. `--data
alpaca:2000,cot:0.5` takes at most 2000 Alpaca records and half of the CoT records; a weight above 1
repeats a source (2: every record twice; 1.5: every record once and a drawn half again).
`--max_records_per_source` caps every source after its own count or weight. Each source is drawn with
its own generator seeded from --seed and the file name, so a mixture is the same on every run, and one
source's draw does not change when another is added. Every step logs its counts per source.
"""

import gzip
import json
import random
from pathlib import Path

from alpaca_cot import DATA_DIR

from alpaca_cot.data import dedup, schemas
from alpaca_cot.data.catalog import check_readable, resolve_specs
from alpaca_cot.cli import UserError, as_list

DEDUP = ("none", "exact", "near")

# Placeholders some Alpaca versions use for "no input".
NO_INPUT = {"noinput", "<noinput>", "no input"}


def _loads(text: str, path: Path, place: str = ""):
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{path}: {place}JSON nested too deeply to read") from None


def parse(path: Path) -> list[tuple[str, object]]:
    """The raw records of one file, each with its place ('record 3' or 'line 4') for messages; a `.gz` file
    is read through gzip (the study keeps its predictions as .jsonl.gz)."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8-sig") as f:
                text = f.read()
        else:
            text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM is not an error
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError) as e:  # gzip's BadGzipFile is an OSError; a cut-off one an EOFError
        raise UserError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if Path(path.stem if path.suffix == ".gz" else path.name).suffix != ".jsonl":
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


def load_file(path: Path, skip_bad_records: bool = False, require_output: bool = True,
              log=print) -> tuple[list[dict], int]:
    """Valid records of one file and how many bad ones were skipped (generation needs no output). A file in
    another catalogue schema (schemas.py) is converted as it is read, and a line logged saying which."""
    rows = parse(Path(path))
    schema = schemas.detect(rows, path)
    hint = "" if schema is not None else (
        f"; no record of the file fits a known schema ({', '.join(s.name for s in schemas.known())})")
    schema = schema or schemas.known()[0]
    if not schema.uniform:
        log(f"{path}: read as the {schema.name} schema ({schema.describe()}), converted to instruction/input/output")
    records, skipped = [], 0
    for place, raw in rows:
        record, why = schema.read(raw)
        clean, why = _check(record, require_output) if record is not None else (None, why)
        if clean is None:
            if not skip_bad_records:
                raise UserError(f"{path}: {place}: {why} (pass --skip_bad_records to skip such records){hint}")
            skipped += 1
            continue
        records.append(clean)
    return records, skipped


def load(data, skip_bad_records: bool = False, data_dir: Path = DATA_DIR, log=print, seed: int = 42) -> dict[str, list]:
    """All records that --data names, counts and weights drawn with seed, as columns (see to_columns)."""
    return load_mixture(data, seed=seed, skip_bad_records=skip_bad_records, data_dir=data_dir, log=log)[1]


def load_sources(paths: list[Path], skip_bad_records: bool = False, log=print) -> list[tuple[Path, list[dict]]]:
    """The valid records of each file, in order, logging how many bad ones each skipped."""
    sources = []
    for path in paths:
        records, skipped = load_file(path, skip_bad_records, log=log)
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


def draw(records: list, spec, cap: int | None, rng: random.Random) -> list:
    """The records a count (int) or weight (float) asks for, capped at cap, in file order."""
    n = len(records) if spec is None else min(spec, len(records)) if isinstance(spec, int) else round(spec * len(records))
    if cap is not None:
        n = min(n, cap)
    if not records or n == len(records):
        return list(records)
    whole, rest = divmod(n, len(records))
    return list(records) * whole + [records[i] for i in sorted(rng.sample(range(len(records)), rest))]


def eval_keys(files) -> list[str]:
    """The normalised prompts of every row of the evaluation files (instruction or question, and input)."""
    keys = []
    for file in as_list(files or ()):
        path = Path(file).expanduser()
        check_readable(path, "--decontaminate file")
        rows = parse(path)
        if not rows:
            raise UserError(f"{path}: no evaluation rows in this --decontaminate file (an empty file?); nothing "
                            "would be removed: pass the evaluation set itself, or leave --decontaminate out")
        for place, raw in rows:
            text = raw.get("instruction") or raw.get("question") if isinstance(raw, dict) else None
            if not isinstance(text, str):
                raise UserError(f"{path}: {place}: field 'instruction' (or 'question') is missing or not a string")
            keys.append(dedup.prompt_key({"instruction": text, "input": str(raw.get("input") or "")}))
    return keys


def _log_counts(log, what: str, removed: dict):
    if any(removed.values()):
        log(f"{what}: " + ", ".join(f"{path.stem} {n}" for path, n in removed.items()) + f" (total {sum(removed.values())})")


def load_mixture(spec, *, seed: int = 42, skip_bad_records: bool = False, max_records_per_source: int | None = None,
                 dedup_mode: str = "none", decontaminate=None, data_dir: Path = DATA_DIR, log=print):
    """(files, columns) of the mixture --data names; see the module docstring for the order of steps."""
    if dedup_mode not in DEDUP:
        raise UserError(f"--dedup must be one of {', '.join(DEDUP)}, got {dedup_mode!r}")
    if max_records_per_source is not None and (not isinstance(max_records_per_source, int)
                                               or isinstance(max_records_per_source, bool) or max_records_per_source < 1):
        raise UserError(f"--max_records_per_source must be a positive integer, got {max_records_per_source!r}")
    specs = resolve_specs(spec, data_dir)
    keys = eval_keys(decontaminate)
    sources = load_sources([path for path, _ in specs], skip_bad_records, log)
    near = dedup_mode == "near"
    if keys:
        sources, removed = dedup.decontaminate(sources, keys, near)
        log(f"decontamination against {len(keys)} evaluation rows removed {sum(removed.values())} training records")
        _log_counts(log, "  per source", removed)
    if dedup_mode != "none":
        sources, removed = dedup.deduplicate(sources, near)
        log(f"{dedup_mode} dedup removed {sum(removed.values())} records")
        _log_counts(log, "  per source", removed)
    drawn = []
    for (path, records), (_, count) in zip(sources, specs):
        picked = draw(records, count, max_records_per_source, random.Random(f"{seed}:{path.name}"))
        if len(picked) != len(records):
            log(f"{path.stem}: drew {len(picked)} of {len(records)} records (seed {seed})")
        drawn.append((path, picked))
    return [path for path, _ in specs], to_columns(drawn, label=spec)
