"""FLAN chain-of-thought data -> Alpaca-style {"instruction", "input", "output"} records.

Each FLAN CoT training set is a TSV of `question<TAB>answer<TAB>chain_of_thought` rows.
Every row is rendered with one of its dataset's FLAN zero-shot templates
(data/flan_cot_templates.json), chosen at random from a seeded RNG.

Two ways to read the TSVs:
- "original": exactly what Alpaca-CoT's formating.py did, `csv.reader(f, delimiter='\\t')`.
  Its default quotechar strips the quotes of fields that begin with `"` (975 creak
  questions, 8 strategyqa chains of thought), and line breaks stay as the two
  characters backslash + n.
- "clean": the text as written (a plain split on tab), with backslash + n turned into a
  real newline and each field stripped. Other backslash sequences (aqua's LaTeX
  `\\therefore`, creak's `3\\14`) are kept. aqua has 8 double-escaped `\\\\n` that sit
  between lines otherwise broken by `\\n`: they are over-escaped line breaks, so they
  become one newline too (not a stray backslash before a newline).
"""

import csv
import http.client
import json
import random
import re
import sys
import urllib.request
from pathlib import Path

from alpaca_cot import DATA_DIR
from alpaca_cot.cli import UserError
from alpaca_cot.text import normalise

DATASETS = ("aqua", "creak", "ecqa", "esnli", "gsm8k", "qasc", "qed", "sensemaking", "strategyqa")
FIELDS = ("question", "answer", "chain_of_thought")
STYLES = ("original", "clean")
FLAN_URL = (
    "https://raw.githubusercontent.com/google-research/FLAN/"
    "e9e4ec6e2701182c7a91af176f705310da541277/flan/v2/cot_data/{name}_train.tsv"
)
# One or two backslashes followed by n: a (possibly double-escaped) line break.
# Matching left to right, so `\n\inline` is a newline followed by an intact `\inline`.
_ESCAPED_NEWLINE = re.compile(r"\\\\?n")


def load_templates(path=DATA_DIR / "flan_cot_templates.json"):
    """{dataset: [(input_template, target_template), ...]}"""
    with open(path, encoding="utf-8") as f:
        datasets = json.load(f)["datasets"]
    return {name: [tuple(pair) for pair in pairs] for name, pairs in datasets.items()}


def _check_width(path, n, row):
    if len(row) != 3:
        raise UserError(
            f"{path}: line {n}: expected 3 tab-separated fields "
            f"(question, answer, chain_of_thought), got {len(row)}"
        )


def read_tsv(path, style="original", warn=None):
    """Rows of (question, answer, chain_of_thought) strings."""
    if style not in STYLES:
        raise UserError(f"unknown style {style!r}: use one of {', '.join(STYLES)}")
    try:
        rows = _read_rows(path, style, warn or (lambda message: print(message, file=sys.stderr)))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:  # the field-size limit, a NUL byte
        raise UserError(f"{path}: {e}") from None
    except OSError as e:  # unreadable (permissions, an I/O error), vanished, a folder
        raise UserError(f"{path}: cannot read it ({e.strerror or type(e).__name__})") from None
    if not rows:
        raise UserError(f"{path}: no rows (an empty file)")
    return rows


def _read_rows(path, style, warn):
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a BOM is not part of the first question
        if style == "original":
            reader = csv.reader(f, delimiter="\t")
            merged = []
            for row in reader:
                _check_width(path, reader.line_num, row)
                # FLAN's fields hold no real line breaks: one here is csv joining lines after an unbalanced quote.
                if any("\n" in field for field in row):
                    merged.append(reader.line_num)
                rows.append(tuple(row))
            if merged:
                warn(f"warning: {path}: {len(merged)} row(s) ending at line(s) {', '.join(map(str, merged[:10]))} "
                     "span several lines: an unbalanced quote made csv.reader join them, as the 2023 code did")
            return rows
        for n, line in enumerate(f, 1):
            row = line.rstrip("\r\n").split("\t")
            _check_width(path, n, row)
            row = tuple(_ESCAPED_NEWLINE.sub("\n", field).strip() for field in row)
            for name, value in zip(FIELDS, row):
                if not value:
                    raise UserError(f"{path}: line {n}: empty field {name}")
            rows.append(row)
    return rows


def format_row(row, template):
    question, answer, cot = row
    input_t, target_t = template
    # The braces to fill are in the template; braces inside values are left alone by format.
    return {
        "instruction": input_t.format(question=question),
        "input": "",
        "output": target_t.format(chain_of_thought=cot, answer=answer),
    }


def format_dataset(name, rows, templates, rng):
    """One template per row, drawn with rng (a random.Random), in row order."""
    pairs = templates[name]
    return [format_row(row, pairs[rng.randrange(len(pairs))]) for row in rows]


def question_key(question: str) -> str:
    """What makes two questions the same for holding out: case, spacing and FLAN's literal \\n ignored (lighter
    than dedup.normalise, which also drops punctuation (alpaca_cot/text.py); grid.key shares it to keep its draw)."""
    return normalise(question, flan_newlines=True)


def holdout(formatted: dict, rows: dict, per_dataset: int, seed: int) -> tuple[dict, list, int]:
    """Moves per_dataset questions of each dataset, drawn with seed, to an evaluation list.

    formatted and rows map dataset -> records and their TSV rows, in the same order. Returns the
    training records left, the evaluation records (the question as written, its gold answer and the
    FLAN-formatted reference) and how many training rows were dropped for repeating a held-out
    question (in any dataset), so that no evaluation question is ever trained on.
    """
    evaluation, n_picked = [], 0
    for name in formatted:
        n = min(per_dataset, len(rows[name]))
        picked = sorted(random.Random(f"{seed}:{name}").sample(range(len(rows[name])), n))
        n_picked += len(picked)
        seen = set()
        for i in picked:
            question, answer, _ = rows[name][i]
            if question_key(question) not in seen:
                seen.add(question_key(question))
                evaluation.append({"task": "cot", "dataset": name, "instruction": question, "input": "",
                                   "answer": answer, "reference": formatted[name][i]["output"]})
    held = {question_key(r["instruction"]) for r in evaluation}
    train, dropped = {}, 0
    for name, records in formatted.items():
        keep = [r for r, row in zip(records, rows[name]) if question_key(row[0]) not in held]
        dropped += len(records) - len(keep)
        train[name] = keep
    return train, evaluation, dropped - n_picked


def download(name, dest_dir, timeout=60):
    """Fetches FLAN's <name>_train.tsv into dest_dir (kept as a cache); returns its path."""
    dest = Path(dest_dir) / f"{name}_train.tsv"
    if dest.exists():
        return dest
    url = FLAN_URL.format(name=name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            f.write(r.read())
    except (OSError, http.client.HTTPException) as e:  # URLError, timeouts; a cut-off body (IncompleteRead)
        part.unlink(missing_ok=True)
        raise UserError(f"download of {url} failed ({e}); fetch it yourself and pass --src DIR")
    part.replace(dest)
    return dest
