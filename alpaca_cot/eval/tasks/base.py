"""What an evaluation task says: how a record of its file becomes an item, the rows an item is asked as,
how a row is scored, summarised and shown in summary.md, and what a prediction row of it must hold.

A task is a `Task` subclass in its own module of this folder (alpaca_cot/eval/tasks/__init__.py finds it).
"""

from pathlib import Path

from alpaca_cot.cli import UserError

REFERENCES = ("output", "std_answer", "reference")  # where a record keeps its reference answer


def field(path, place, raw: dict, *names) -> str:
    """The first of names that raw holds as a non-empty string; else one line naming file, record and field."""
    for name in names:
        value = raw.get(name)
        if isinstance(value, str) and value.strip():
            return value
    raise UserError(f"{path}: {place}: field '{names[0]}' is missing or empty")


def dataset_of(path, raw: dict) -> str:
    """A record's dataset: its own field, Belle-eval's class, or the file's name."""
    return str(raw.get("dataset") or raw.get("class") or Path(path).stem).replace("\u00a0", " ")


def mean(values) -> float | None:
    """The mean of the values that are not None, rounded to 4 places; None if there are none."""
    values = [float(v) for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


class Task:
    """One kind of evaluation item. A subclass sets `name` (a row's "task" field, and the name --eval takes)
    and `scores`, and defines `score`, `summarize` and `markdown`; the rest has defaults."""

    name = ""
    rank = 100  # where the task comes in listings, summaries and errors: lower first, then by name
    triggers = (False,)  # the rows an item is asked as: without (False) and/or with (True) the CoT trigger
    few_shot = False  # whether with_shots gives its items their dataset's exemplars as context
    required = ("instruction", "output", "gold")  # the fields a prediction row must have
    nullable = ("dataset", "input")  # string fields a prediction row may hold as null (a file had none)
    scores = ()  # the fields `score` writes
    # The study's per-row measures: name -> (label, what a row scores or None, CoT trigger of the rows).
    metrics = {}

    def item(self, path, place, raw: dict) -> dict:
        """One record of an evaluation file as an item {task, instruction, input, ...}; bad fields raise
        UserError naming path, place (the record) and the field."""
        return {"task": self.name, "instruction": field(path, place, raw, "instruction", "question"),
                "input": raw.get("input") or ""}

    def rows(self, item: dict, index: int) -> list[dict]:
        """The rows the item is asked as, one per trigger; index is its place among all items asked."""
        return [dict(item, id=f"{self.name}-{index}", cot_trigger=trigger) for trigger in self.triggers]

    def score(self, row: dict) -> dict:
        """The `scores` fields of a row, from its output and gold (and what its item says) alone."""
        raise NotImplementedError

    def check(self, row: dict) -> str | None:
        """What is wrong with a prediction row beyond its fields' presence and types, or None."""
        return None

    def verdict(self, row: dict) -> bool | None:
        """Whether a scored row's answer is right, for tasks with one right answer; else None."""
        return None

    def summarize(self, rows: list[dict]) -> dict:
        """The task's part of summary.json, from its scored rows (at least one)."""
        raise NotImplementedError

    def markdown(self, summary: dict) -> list[str]:
        """The task's lines of summary.md, from its part of the summary."""
        raise NotImplementedError
