"""The study's report: report.md, figures and summary.json, from the files the study wrote.

Every number comes from results/<model>/predictions.jsonl (re-scored here, so the report and
`scripts/evaluate.py --predictions` agree by construction) and adapters/<mix>/train_summary.json.
Differences between models carry a 95% interval from a paired bootstrap over the questions.
"""

import json
import random
from pathlib import Path

from . import evaluation
from .evaluation import percent
from .io import atomic_open, write_json_atomic

QUALITATIVE = (("cot", "gsm8k"), ("cot", "strategyqa"), ("cot", "ecqa"), ("chinese", None), ("english", None))


def load_rows(out: Path, models) -> dict:
    return {m: [evaluation.score_row(r) for r in evaluation.read_predictions(out / "results" / m / "predictions.jsonl")]
            for m in models}


def paired_difference(a: list[float], b: list[float], seed: int = 0, draws: int = 2000) -> tuple[float, float, float]:
    """mean(b) - mean(a) over paired items, with a 95% bootstrap interval."""
    rng = random.Random(seed)
    n = len(a)
    diffs = [y - x for x, y in zip(a, b)]
    boot = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    return sum(diffs) / n, boot[int(0.025 * draws)], boot[int(0.975 * draws) - 1]


def _values(rows, task, field, trigger=False) -> list[float]:
    chosen = [r for r in rows if r["task"] == task and r["cot_trigger"] == trigger and r.get(field) is not None]
    return [float(r[field]) for r in sorted(chosen, key=lambda r: r["id"])]


COMPARISONS = (
    ("CoT data, FLAN CoT accuracy (no trigger)", "alpaca", "alpaca-cot", "cot", "correct", False),
    ("CoT data, FLAN CoT accuracy (no trigger), with BELLE", "alpaca-belle", "alpaca-belle-cot", "cot", "correct", False),
    ("CoT data, FLAN CoT accuracy (trigger)", "alpaca", "alpaca-cot", "cot", "correct", True),
    ("Chinese data, answers in Chinese", "alpaca", "alpaca-belle", "chinese", "chinese", False),
    ("Chinese data, final number agrees", "alpaca", "alpaca-belle", "chinese", "final_number_match", False),
    ("Chinese data, English ROUGE-L", "alpaca", "alpaca-belle", "english", "rouge_l", False),
    ("Chinese data, answers in English", "alpaca", "alpaca-belle", "english", "english", False),
    ("Tuning (full mix vs base), FLAN CoT accuracy", "base", "alpaca-belle-cot", "cot", "correct", False),
)


def _trigger_gain(rows) -> list[float]:
    """Per CoT question: correct with the trigger minus correct without it."""
    return [b - a for a, b in zip(_values(rows, "cot", "correct", False), _values(rows, "cot", "correct", True))]


def findings(rows: dict) -> list[dict]:
    """Each comparison of the grid, and the CoT trigger's effect on every model."""
    found = []
    for label, a, b, task, field, trigger in COMPARISONS:
        if a in rows and b in rows:
            x, y = _values(rows[a], task, field, trigger), _values(rows[b], task, field, trigger)
            if x and len(x) == len(y):
                found.append(dict(zip(("label", "a", "b", "n"), (label, a, b, len(x))),
                                  **dict(zip(("diff", "low", "high"), paired_difference(x, y)))))
    for model, model_rows in rows.items():
        x, y = _values(model_rows, "cot", "correct", False), _values(model_rows, "cot", "correct", True)
        if x:
            found.append({"label": f"CoT trigger on {model}", "a": "no trigger", "b": "trigger", "n": len(x),
                          **dict(zip(("diff", "low", "high"), paired_difference(x, y)))})
    for a, b in (("alpaca", "alpaca-cot"), ("alpaca-belle", "alpaca-belle-cot")):
        if a in rows and b in rows:  # does the trigger help the CoT-trained model more than the other?
            x, y = (_trigger_gain(rows[m]) for m in (a, b))
            found.append({"label": "CoT trigger's gain, CoT-trained vs not", "a": a, "b": b, "n": len(x),
                          **dict(zip(("diff", "low", "high"), paired_difference(x, y)))})
    for f in found:
        f["verdict"] = "no detectable difference" if f["low"] <= 0 <= f["high"] else (
            "higher" if f["low"] > 0 else "lower")
    return found


def figures(summaries: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(summaries)
    datasets = list(summaries[models[0]]["cot"]["no_trigger"]["per_dataset"]) + ["all"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    width = 0.8 / len(models)
    for ax, key in zip(axes, ("no_trigger", "trigger")):
        for i, m in enumerate(models):
            part = summaries[m]["cot"][key]
            values = [100 * (part["per_dataset"].get(d) or 0) for d in datasets[:-1]] + [100 * part["accuracy"]]
            ax.bar([j + i * width for j in range(len(datasets))], values, width, label=m)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))], datasets, rotation=30)
        ax.set_title(f"FLAN CoT accuracy, {key.replace('_', ' ')}")
        ax.set_ylabel("% correct")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cot_accuracy.png", dpi=110)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    metrics = (("chinese", "chinese_share", "Chinese answers in Chinese"), ("chinese", "final_number_match",
               "Chinese final number agrees"), ("english", "english_share", "English answers in English"),
               ("english", "rouge_l", "English ROUGE-L"))
    width = 0.8 / len(metrics)
    for i, (task, field, label) in enumerate(metrics):
        ax.bar([j + i * width for j in range(len(models))],
               [100 * (summaries[m][task][field] or 0) for m in models], width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models)
    ax.set_ylabel("%")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "language.png", dpi=110)
    plt.close("all")
    return ["cot_accuracy.png", "language.png"]


def _cell(text: str, limit: int = 260) -> str:
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|").replace("\n", "<br>") or "(empty)"


def qualitative(rows: dict) -> list[str]:
    """The same prompts for every model, side by side; each CoT question twice, odd rows without the trigger."""
    models = list(rows)
    first = rows[models[0]]
    lines = ["| prompt | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for task, dataset in QUALITATIVE:
        pick = next((r for r in first if r["task"] == task and (dataset is None or r["dataset"] == dataset)), None)
        if pick is None:
            continue
        for trigger in ((False, True) if task == "cot" else (False,)):
            answers = [next(r for r in rows[m] if r["id"] == pick["id"] and r["cot_trigger"] == trigger) for m in models]
            prompt = pick["instruction"] + (" **[+ CoT trigger]**" if trigger else "")
            marks = [("" if task != "cot" else (" ✔" if a["correct"] else " ✘")) for a in answers]
            lines.append(f"| {_cell(prompt, 300)} | " + " | ".join(_cell(a["output"]) + k for a, k in zip(answers, marks))
                         + " |")
    return lines


def summary_table(summaries: dict, train: dict) -> list[str]:
    lines = ["| model | train records | CoT acc, no trigger | CoT acc, trigger | answer found | FLAN phrase | "
             "acc when found | Chinese answers in Chinese | final number agrees | English in English | ROUGE-L | words |",
             "|---" + "|---:" * 11 + "|"]
    for m, s in summaries.items():
        c, zh, en = s["cot"], s["chinese"], s["english"]
        plain = c["no_trigger"]
        lines.append(f"| {m} | {train.get(m, {}).get('records', 0)} | {percent(plain['accuracy'])} | "
                     f"{percent(c['trigger']['accuracy'])} | {percent(plain['answer_found'])} | "
                     f"{percent(plain['flan_phrase'])} | {percent(plain['accuracy_when_found'])} | "
                     f"{percent(zh['chinese_share'])} | {percent(zh['final_number_match'])} | "
                     f"{percent(en['english_share'])} | {percent(en['rouge_l'])} | {en['mean_words']} |")
    return lines


def write_report(out: Path, config: dict, manifest: dict):
    models = ["base", *config["mixes"]]
    environment = json.loads((out / "environment.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    rows = load_rows(out, models)
    summaries = {m: evaluation.summarize(r) for m, r in rows.items()}
    for m in models:  # the per-model files follow the current scoring rules too
        evaluation.write(rows[m], summaries[m], out / "results" / m, m)
    train = {m: json.loads((out / "adapters" / m / "train_summary.json").read_text()) for m in config["mixes"]}
    for m in config["mixes"]:
        train[m]["records"] = sum(manifest["train_records"][s] for s in m.split("-"))
    found = findings(rows)
    names = figures(summaries, out)
    write_json_atomic({"config": config, "data": manifest, "environment": environment, "timings_s": timings,
                       "training": train, "results": summaries, "findings": found}, out / "summary.json")
    from .report_text import render

    with atomic_open(out / "report.md") as f:
        f.write(render(config, manifest, environment, timings, train, summaries, found, names,
                       summary_table(summaries, train), qualitative(rows)))
