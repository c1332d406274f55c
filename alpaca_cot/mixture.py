"""The training mixture that --data names: load, decontaminate, deduplicate, then draw each source.

`--data alpaca:2000,cot:0.5` takes at most 2000 Alpaca records and half of the CoT records; a weight
above 1 repeats a source (2: every record twice; 1.5: every record once and a drawn half again).
`--max_records_per_source` caps every source after its own count or weight. Each source is drawn
with its own generator seeded from --seed and the file name, so a mixture is the same on every run,
and one source's draw does not change when another is added. Every step logs its counts per source.
"""

import random
from pathlib import Path

from . import DATA_DIR, data, dedup
from .cli import UserError, as_list

DEDUP = ("none", "exact", "near")


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
        data.check_readable(path, "--decontaminate file")
        for place, raw in data.parse(path):
            text = raw.get("instruction") or raw.get("question") if isinstance(raw, dict) else None
            if not isinstance(text, str):
                raise UserError(f"{path}: {place}: field 'instruction' (or 'question') is missing or not a string")
            keys.append(dedup.prompt_key({"instruction": text, "input": str(raw.get("input") or "")}))
    return keys


def _log_counts(log, what: str, removed: dict):
    if any(removed.values()):
        log(f"{what}: " + ", ".join(f"{path.stem} {n}" for path, n in removed.items()) + f" (total {sum(removed.values())})")


def prepare(spec, *, seed: int = 42, skip_bad_records: bool = False, max_records_per_source: int | None = None,
            dedup_mode: str = "none", decontaminate=None, data_dir: Path = DATA_DIR, log=print):
    """(files, columns) of the mixture --data names; see the module docstring for the order of steps."""
    if dedup_mode not in DEDUP:
        raise UserError(f"--dedup must be one of {', '.join(DEDUP)}, got {dedup_mode!r}")
    if max_records_per_source is not None and (not isinstance(max_records_per_source, int)
                                               or isinstance(max_records_per_source, bool) or max_records_per_source < 1):
        raise UserError(f"--max_records_per_source must be a positive integer, got {max_records_per_source!r}")
    specs = data.resolve_specs(spec, data_dir)
    keys = eval_keys(decontaminate)
    sources = data.load_sources([path for path, _ in specs], skip_bad_records, log)
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
    return [path for path, _ in specs], data.to_columns(drawn, label=spec)
