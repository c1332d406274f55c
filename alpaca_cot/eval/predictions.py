"""A row of an evaluation's predictions.jsonl, as scripts/evaluate.py --predictions reads it back: the fields that
scoring reads, with their types, checked before any is scored (one line naming file, record and field). Which
fields a row of a task must have, and what else its task checks, is the task's (alpaca_cot/eval/tasks/)."""

from alpaca_cot.eval.tasks import TASKS

STRINGS = ("instruction", "output", "gold", "dataset", "input", "id")  # the fields that, where present, are strings


def check_prediction(row) -> str | None:
    """What is wrong with one prediction row, or None."""
    if not isinstance(row, dict):
        return f"expected a prediction row (an object), got {type(row).__name__}"
    name = row.get("task")
    if name is None:
        return "not a prediction row (field 'task')"
    if name not in TASKS:
        return f"field 'task' must be one of {', '.join(TASKS)}, got {name!r}"
    task = TASKS[name]
    for field in task.required:
        if field not in row:
            return f"not a prediction row (field '{field}')"
    for field in STRINGS:
        optional = field in task.nullable  # null where a file had none
        if field in row and not isinstance(row[field], str) and not (optional and row[field] is None):
            return f"field '{field}' must be a string, got {type(row[field]).__name__}"
    if (why := task.check(row)) is not None:
        return why
    if not isinstance(row.get("cot_trigger", False), bool):
        return f"field 'cot_trigger' must be true or false, got {row['cot_trigger']!r}"
    return None
