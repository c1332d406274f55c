"""A row of an evaluation's predictions.jsonl, as scripts/evaluate.py --predictions reads it back: the fields that
scoring reads, with their types, checked before any is scored (one line naming file, record and field)."""

from alpaca_cot.data.cot import DATASETS

TASKS = ("cot", "chinese", "english")  # the kinds of evaluation item (evaluation.py)


def check_prediction(row) -> str | None:
    """What is wrong with one prediction row, or None."""
    if not isinstance(row, dict):
        return f"expected a prediction row (an object), got {type(row).__name__}"
    task = row.get("task")
    if task is None:
        return "not a prediction row (field 'task')"
    if task not in TASKS:
        return f"field 'task' must be one of {', '.join(TASKS)}, got {task!r}"
    for field in ("instruction", "output", "gold") + (("dataset",) if task == "cot" else ()):
        if field not in row:
            return f"not a prediction row (field '{field}')"
    for field in ("instruction", "output", "gold", "dataset", "input", "id"):
        optional = field in ("dataset", "input") and task != "cot"  # null where a file had none
        if field in row and not isinstance(row[field], str) and not (optional and row[field] is None):
            return f"field '{field}' must be a string, got {type(row[field]).__name__}"
    if task == "cot" and row["dataset"] not in DATASETS:
        return f"field 'dataset' {row['dataset']!r} is not a FLAN CoT dataset ({', '.join(DATASETS)})"
    if not isinstance(row.get("cot_trigger", False), bool):
        return f"field 'cot_trigger' must be true or false, got {row['cot_trigger']!r}"
    return None
