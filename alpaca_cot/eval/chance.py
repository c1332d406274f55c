"""What guessing scores on the FLAN CoT held-out questions: the floor every accuracy is read against.

- uniform: the expected accuracy of picking one of the question's options at random (1/options; 1/2
  for yes/no and Sentence A/B; 0 for gsm8k's open numbers);
- majority: the accuracy of always giving the answer most frequent in the dataset's *training* rows (for
  ecqa, whose options differ per question, the option in the most frequent position; for gsm8k the most
  frequent number), so the baseline does not peek at the evaluation answers.
"""

from collections import Counter

from alpaca_cot.eval import reading


def _position(question: str, answer: str) -> int | None:
    keys = list(reading.options(question))
    return keys.index(answer) if answer in keys else None


def majority_answers(train_rows: dict) -> dict:
    """{dataset: the most frequent gold answer of its training rows (ecqa: option position)}.
    train_rows: {dataset: [(question, answer, chain_of_thought), ...]}."""
    found = {}
    for dataset, rows in train_rows.items():
        golds = [reading.gold(a, dataset, q) for q, a, _ in rows]
        if reading.KINDS.get(dataset) == "option":
            golds = [_position(q, g) for (q, _, _), g in zip(rows, golds)]
        counts = Counter(g for g in golds if g is not None)
        found[dataset] = counts.most_common(1)[0][0] if counts else None
    return found


def uniform(item: dict) -> float:
    kind = reading.KINDS.get(item["dataset"], "number")
    if kind in ("yes_no", "sentence"):
        return 0.5
    if kind == "number":
        return 0.0
    n = len(reading.options(item["instruction"]))
    return 1 / n if n else 0.0


def majority(item: dict, answer) -> float:
    right = reading.gold(item["gold"], item["dataset"], item["instruction"])
    if reading.KINDS.get(item["dataset"]) == "option":
        return float(answer is not None and _position(item["instruction"], right) == answer)
    return float(answer is not None and right == answer)


def baselines(items: list[dict], majority_by_dataset: dict) -> dict:
    """{"uniform"|"majority": {dataset: accuracy, ..., "all": accuracy over every question}}."""
    out = {}
    for name, score in (("uniform", uniform), ("majority", lambda i: majority(i, majority_by_dataset.get(i["dataset"])))):
        values = {}
        for item in items:
            values.setdefault(item["dataset"], []).append(score(item))
        table = {d: round(sum(v) / len(v), 4) for d, v in sorted(values.items())}
        table["all"] = round(sum(sum(v) for v in values.values()) / len(items), 4)
        out[name] = table
    return out
