"""FLAN chain-of-thought data -> Alpaca-style {"instruction", "input", "output"} records.

Each FLAN CoT training set is a TSV of `question<TAB>answer<TAB>chain_of_thought` rows.
Every row is rendered with one of its dataset's FLAN zero-shot templates
(templates/flan_cot.json), chosen at random from a seeded RNG.

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
import json
import re
import urllib.request
from pathlib import Path

from alpaca_cot import TEMPLATES_DIR
from alpaca_cot.cli import UserError

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


def load_templates(path=TEMPLATES_DIR / "flan_cot.json"):
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


def read_tsv(path, style="original"):
    """Rows of (question, answer, chain_of_thought) strings."""
    if style not in STYLES:
        raise UserError(f"unknown style {style!r}: use one of {', '.join(STYLES)}")
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        if style == "original":
            reader = csv.reader(f, delimiter="\t")
            for row in reader:
                _check_width(path, reader.line_num, row)
                rows.append(tuple(row))
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
    except OSError as e:  # URLError, HTTPError and timeouts are all OSErrors
        part.unlink(missing_ok=True)
        raise UserError(f"download of {url} failed ({e}); fetch it yourself and pass --src DIR")
    part.replace(dest)
    return dest
