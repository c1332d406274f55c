"""FLAN CoT questions with a gold answer (`format_cot.py --holdout` writes them): each asked without and with
the CoT trigger, and scored by answer accuracy (the answer read as a person reads it: eval/reading.py)."""

from alpaca_cot.cli import UserError
from alpaca_cot.data.cot import DATASETS
from alpaca_cot.eval import reading
from alpaca_cot.eval.tasks.base import Task, field, mean, percent

TRIGGERS = {False: "no_trigger", True: "trigger"}  # summary.json's key for each half


class CoT(Task):
    name = "cot"
    rank = 0
    triggers = (False, True)
    few_shot = True
    required = ("instruction", "output", "gold", "dataset")
    nullable = ()
    scores = ("extracted", "method", "correct")
    metrics = {
        "cot": ("FLAN CoT accuracy, no trigger", lambda r: r["correct"], False),
        "cot_trigger": ("FLAN CoT accuracy, with the trigger", lambda r: r["correct"], True),
        "trigger_gain": ("gain from the CoT trigger", None, None),  # per question: with the trigger minus without
        "answer_found": ("answer found", lambda r: r["extracted"] is not None, False),
        "flan_phrase": ("FLAN phrase", lambda r: r["method"] == "phrase", False),
        "finished": ("answers that ended by themselves", lambda r: r.get("finished", True), False),
    }

    def item(self, path, place, raw: dict) -> dict:
        item = super().item(path, place, raw)
        item["dataset"] = field(path, place, raw, "dataset")
        item["gold"] = field(path, place, raw, "answer")
        if reading.gold(item["gold"], item["dataset"], item["instruction"]) is None:
            raise UserError(f"{path}: {place}: field 'answer' {item['gold']!r} is not a "
                            f"{reading.KINDS.get(item['dataset'], 'number')} answer")
        return item

    def score(self, row: dict) -> dict:
        got, method = reading.extract(row["output"], row["dataset"], row["instruction"], row.get("finished", True))
        return {"extracted": got, "method": method,
                "correct": got is not None and got == reading.gold(row["gold"], row["dataset"], row["instruction"])}

    def check(self, row: dict) -> str | None:
        if row["dataset"] not in DATASETS:
            return f"field 'dataset' {row['dataset']!r} is not a FLAN CoT dataset ({', '.join(DATASETS)})"
        return None

    def verdict(self, row: dict) -> bool | None:
        return row["correct"]

    def summarize(self, rows: list[dict]) -> dict:
        """Accuracy per dataset and overall (all questions pooled), trigger off and on."""
        summary = {}
        for trigger, key in TRIGGERS.items():
            part = [r for r in rows if r["cot_trigger"] == trigger]
            per = {d: mean(r["correct"] for r in part if r["dataset"] == d) for d in sorted({r["dataset"] for r in part})}
            answered = [r for r in part if r["extracted"] is not None]
            summary[key] = {"accuracy": mean(r["correct"] for r in part), "n": len(part),
                            "answer_found": mean(r["extracted"] is not None for r in part),
                            "flan_phrase": mean(r["method"] == "phrase" for r in part),
                            "accuracy_when_found": mean(r["correct"] for r in answered), "per_dataset": per}
        return summary

    def markdown(self, summary: dict) -> list[str]:
        datasets = list(summary["no_trigger"]["per_dataset"])
        lines = ["FLAN CoT answer accuracy (%), without / with the CoT trigger:", "",
                 "| | " + " | ".join(datasets) + " | all |", "|---|" + "---:|" * (len(datasets) + 1)]
        for key in TRIGGERS.values():
            part = summary[key]
            cells = [percent(part["per_dataset"].get(d)) for d in datasets] + [percent(part["accuracy"])]
            lines.append(f"| {key.replace('_', ' ')} (n={part['n']}) | " + " | ".join(cells) + " |")
        return lines + [""]
