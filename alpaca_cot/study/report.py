"""The study's numbers: every model re-scored from its predictions, aggregated over seeds, compared.

Every number comes from results/<model>/predictions.jsonl (re-scored here, so the report and
`scripts/evaluate.py --predictions` agree by construction), data/manifest.json (chance baselines) and
adapters/<mix>/seed-<s>/train_summary.json. Intervals, p-values and Holm's correction are
alpaca_cot/study/significance.py's. The comparisons are declared here, before the run they report on (after a
single-seed pilot of the same design): PRIMARY is the family the report corrects for multiplicity; the rest
are exploratory.
"""

import json
import random
from pathlib import Path

import numpy as np

from alpaca_cot import ROOT

from alpaca_cot.eval import evaluation
from alpaca_cot.eval.tasks import TASKS

from alpaca_cot.study import significance, grid
from alpaca_cot.io import atomic_open, write_json_atomic

# name: (task, what a row scores, CoT trigger); a score of None leaves the row out (the same rows for every
# model). Each task of the study says its own (alpaca_cot/eval/tasks/); trigger_gain is matrix's.
METRICS = {name: (task, score, trigger) for task in grid.EVAL_TASKS
           for name, (_, score, trigger) in TASKS[task].metrics.items()}
LABELS = {name: label for task in grid.EVAL_TASKS for name, (label, _, _) in TASKS[task].metrics.items()}
# (label, from, to, metric). Declared before the run; Holm-corrected together.
PRIMARY = (
    ("CoT data: FLAN CoT accuracy", "alpaca", "alpaca-cot", "cot"),
    ("CoT data, with BELLE: FLAN CoT accuracy", "alpaca-belle", "alpaca-belle-cot", "cot"),
    ("Chinese data: Chinese answers in Chinese", "alpaca", "alpaca-belle", "chinese"),
    ("Chinese data: English ROUGE-L", "alpaca", "alpaca-belle", "rouge_l"),
    ("CoT data: gain from the CoT trigger", "alpaca", "alpaca-cot", "trigger_gain"),
)
EXPLORATORY = (
    ("CoT data: FLAN CoT accuracy with the trigger", "alpaca", "alpaca-cot", "cot_trigger"),
    ("CoT data, with BELLE: gain from the CoT trigger", "alpaca-belle", "alpaca-belle-cot", "trigger_gain"),
    ("CoT data: answer found", "alpaca", "alpaca-cot", "answer_found"),
    ("Chinese data: Chinese final number agrees", "alpaca", "alpaca-belle", "final_number"),
    ("Chinese data: English answers in English", "alpaca", "alpaca-belle", "english"),
    ("Chinese data: FLAN CoT accuracy", "alpaca", "alpaca-belle", "cot"),
    ("Tuning (alpaca vs base): FLAN CoT accuracy", "base", "alpaca", "cot"),
    ("Tuning (full mix vs base): FLAN CoT accuracy", "base", "alpaca-belle-cot", "cot"),
)


def load_rows(out: Path, config: dict) -> dict:
    """{model: scored rows}, model as grid.models names them ("base", "alpaca/seed-1", ...)."""
    return {m: [evaluation.score_row(r) for r in evaluation.read_predictions(evaluation.predictions_file(out / "results" / m))]
            for m in grid.models(config)}


def seeds_of(config: dict, mix: str) -> list[str]:
    return ["base"] if mix == "base" else [grid.model_name(mix, s) for s in config["seeds"]]


def matrix(rows: dict, models: list[str], metric: str, dataset: str | None = None) -> np.ndarray:
    """One row per model (seed), one column per question in id order (of one dataset, if given)."""
    task, score, trigger = METRICS[metric]
    if metric == "trigger_gain":
        return matrix(rows, models, "cot_trigger", dataset) - matrix(rows, models, "cot", dataset)
    out = []
    for m in models:
        chosen = sorted((r for r in rows[m] if r["task"] == task and r["cot_trigger"] == trigger
                         and dataset in (None, r["dataset"])), key=lambda r: r["id"])
        out.append([float(v) for r in chosen if (v := score(r)) is not None])
    return np.array(out)


def cot_datasets(rows: dict) -> list[str]:
    return sorted({r["dataset"] for r in rows["base"] if r["task"] == "cot"})


def chance_matrix(rows: dict, manifest: dict, kind: str) -> np.ndarray:
    """The chance baseline per CoT question (kind uniform or majority) as a one-row matrix."""
    from alpaca_cot.eval import chance

    items = sorted((r for r in rows["base"] if r["task"] == "cot" and not r["cot_trigger"]), key=lambda r: r["id"])
    if kind == "uniform":
        return np.array([[chance.uniform(i) for i in items]])
    answers = manifest["chance"]["majority_answers"]
    return np.array([[chance.majority(i, answers.get(i["dataset"])) for i in items]])


def aggregate(rows: dict, config: dict) -> dict:
    """{mix: {metric: estimate, "per_dataset": {metric: {dataset: estimate}}}} over the mix's seeds (base: its one
    run); per dataset for the two FLAN CoT accuracies."""
    found = {}
    for mix in ["base", *config["mixes"]]:
        models = seeds_of(config, mix)
        found[mix] = {m: significance.estimate(matrix(rows, models, m)) for m in METRICS}
        found[mix]["per_dataset"] = {m: {d: significance.estimate(matrix(rows, models, m, d)) for d in cot_datasets(rows)}
                                     for m in ("cot", "cot_trigger")}
    return found


def comparisons(rows: dict, config: dict) -> list[dict]:
    """PRIMARY (Holm-adjusted p) and EXPLORATORY (unadjusted), then the trigger's effect within every model."""
    mixes = ["base", *config["mixes"]]
    found = []
    for family, declared in (("primary", PRIMARY), ("exploratory", EXPLORATORY)):
        for label, a, b, metric in declared:
            if a in mixes and b in mixes:
                result = significance.compare(matrix(rows, seeds_of(config, a), metric),
                                              matrix(rows, seeds_of(config, b), metric))
                found.append(dict(result, label=label, a=a, b=b, metric=metric, family=family))
    for mix in mixes:
        models = seeds_of(config, mix)
        result = significance.compare(matrix(rows, models, "cot"), matrix(rows, models, "cot_trigger"))
        found.append(dict(result, label=f"CoT trigger on {mix}", a="no trigger", b="trigger", metric="cot",
                          family="exploratory"))
    primary = [f for f in found if f["family"] == "primary"]
    for f, adjusted in zip(primary, significance.holm([f["p"] for f in primary])):
        f["p_holm"] = adjusted
    for f in found:
        f["verdict"] = significance.verdict(f, "p_holm" if f["family"] == "primary" else "p")
    return found


def versus_chance(rows: dict, config: dict, manifest: dict) -> dict:
    """{mix: {kind: comparison of FLAN CoT accuracy (no trigger) against that chance baseline}}."""
    floors = {kind: chance_matrix(rows, manifest, kind) for kind in ("uniform", "majority")}
    return {mix: {kind: significance.compare(floor, matrix(rows, seeds_of(config, mix), "cot"))
                  for kind, floor in floors.items()} for mix in ["base", *config["mixes"]]}


def picks(rows: dict, a: str, b: str, metric: str, per_dataset: int, seed: int, triggers=None) -> list[str]:
    """The rule for the qualitative tables: in an order shuffled with seed, the first questions of each
    dataset on which models a and b score differently (then, to fill up, ones on which they agree).
    triggers: (a's, b's) CoT trigger, to compare one model without and with it; the metric's by default."""
    task, score, trigger = METRICS[metric]
    trigger_a, trigger_b = triggers or (trigger, trigger)
    first = {r["id"]: r for r in rows[a] if r["task"] == task and r["cot_trigger"] == trigger_a}
    other = {r["id"]: r for r in rows[b] if r["task"] == task and r["cot_trigger"] == trigger_b}
    ids = sorted(first)
    random.Random(seed).shuffle(ids)
    chosen = []
    for dataset in sorted({first[i]["dataset"] for i in ids}):
        mine = [i for i in ids if first[i]["dataset"] == dataset]
        differ = [i for i in mine if score(first[i]) != score(other[i])]
        chosen += (differ + [i for i in mine if i not in differ])[:per_dataset]
    return chosen


def write_report(out: Path, config: dict, manifest: dict):
    from alpaca_cot.study import figures, prose
    from alpaca_cot.eval import validation

    environment = json.loads((out / "environment.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    rows = load_rows(out, config)
    for model, model_rows in rows.items():  # the per-model files follow the current scoring rules too, compressed
        evaluation.write(model_rows, evaluation.summarize(model_rows), out / "results" / model, model, compress=True)
    train = {m: json.loads((out / "adapters" / m / "train_summary.json").read_text()) for m in grid.models(config)
             if m != "base"}
    results = {"mixes": aggregate(rows, config), "comparisons": comparisons(rows, config),
               "versus_chance": versus_chance(rows, config, manifest)}
    labelled = ROOT / "study" / "scoring-validation"
    scorer = validation.agreement(validation.read_rows(labelled / "sample.jsonl"),
                                  validation.read_rows(labelled / "labels.jsonl"))["batches"] \
        if (labelled / "labels.jsonl").is_file() else None
    names = figures.draw(results, manifest, out)
    write_json_atomic({"config": config, "data": manifest, "environment": environment, "timings_s": timings,
                       "training": train, "results": results, "scorer_validation": scorer}, out / "summary.json")
    with atomic_open(out / "report.md") as f:
        f.write(prose.render(config, manifest, environment, timings, train, results, scorer, names, rows))
