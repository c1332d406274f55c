"""Validating the FLAN CoT scorer against independent readers: a labelled sample of predictions, and the agreement.

A sample is drawn from a study's per-record predictions, stratified by dataset, model and CoT trigger
(`draw_sample`), split into batches. People read each output (they see the question and the output, not
the gold answer nor the scorer's reading) and write down the answer they read, in the dataset's form, or
`none` where the output gives no answer. `agreement` compares the scorer's `extract` with those readings.

The sample, the labelling guide and the labels live in study/scoring-validation/ (its README says who
labelled what); tests/test_scoring.py fails if the scorer agrees with fewer than 97% of the readings.
"""

import random
from pathlib import Path

from alpaca_cot.eval import reading
from alpaca_cot.data.loader import parse

FIELDS = ("sample_id", "batch", "model", "id", "cot_trigger", "dataset", "instruction", "output", "gold")


def draw_sample(predictions: dict, per_stratum: int, batches: tuple[str, ...], seed: int = 0) -> list[dict]:
    """predictions: {model: rows}. From every (dataset, model, trigger) stratum, len(batches) x per_stratum
    CoT rows drawn with seed; the first per_stratum go to batches[0], the next to batches[1], and so on."""
    rng = random.Random(seed)
    sample = []
    strata = {}
    for model, rows in predictions.items():
        for r in rows:
            if r["task"] == "cot":
                strata.setdefault((r["dataset"], model, r["cot_trigger"]), []).append(r)
    for (dataset, model, trigger) in sorted(strata):
        rows = sorted(strata[(dataset, model, trigger)], key=lambda r: r["id"])
        picked = rng.sample(rows, per_stratum * len(batches))
        for k, r in enumerate(picked):
            sample.append({"batch": batches[k // per_stratum], "model": model, "id": r["id"],
                           "cot_trigger": trigger, "dataset": dataset, "instruction": r["instruction"],
                           "output": r["output"], "gold": r["gold"]})
    order = list(range(len(sample)))
    rng.shuffle(order)  # labellers see the strata mixed, not model after model
    sample = [sample[i] for i in order]
    return [dict(r, sample_id=f"s{i:03d}") for i, r in enumerate(sample)]


def read_rows(path) -> list[dict]:
    return [raw for _, raw in parse(Path(path))]


def canonical(answer: str | None, dataset: str, question: str) -> str | None:
    """A person's reading in the scorer's canonical form ("(B)" -> "B", "$1,250" -> "1250"); "none" is None."""
    if answer in (None, "none"):
        return None
    return reading.gold(answer, dataset, question)


def agreement(sample: list[dict], labels: list[dict]) -> dict:
    """Per batch and overall: how often the scorer reads what the readers read (the adjudicated reading), how
    often the two readers agreed with each other, and every disagreement of the scorer."""
    by_id = {r["sample_id"]: r for r in sample}
    batches, disagreements = {}, []
    for label in labels:
        r = by_id[label["sample_id"]]
        person = canonical(label["reading"], r["dataset"], r["instruction"])
        readers = {canonical(x["reading"], r["dataset"], r["instruction"]) for x in label["labellers"]}
        scorer, method = reading.extract(r["output"], r["dataset"], r["instruction"], r.get("finished", True))
        for batch in (label["batch"], "all"):
            counts = batches.setdefault(batch, {"n": 0, "scorer_agrees": 0, "readers_agree": 0})
            counts["n"] += 1
            counts["scorer_agrees"] += person == scorer
            counts["readers_agree"] += len(readers) == 1
        if person != scorer:
            disagreements.append({"sample_id": r["sample_id"], "batch": label["batch"], "dataset": r["dataset"],
                                  "person": person, "scorer": scorer, "method": method, "output": r["output"]})
    order = sorted(batches, key=lambda b: (b == "all", b != "dev", b != "test", b))  # dev, test, later ones, all
    batches = {b: batches[b] for b in order}
    for counts in batches.values():
        counts["scorer_share"] = round(counts["scorer_agrees"] / counts["n"], 4)
        counts["readers_share"] = round(counts["readers_agree"] / counts["n"], 4)
    return {"batches": batches, "disagreements": disagreements}
