"""Formats the FLAN chain-of-thought TSVs into one Alpaca-style JSON list.

    python scripts/format_cot.py --src DIR [--out data/CoT_data.json] [--style original|clean]
        [--seed 42] [--datasets all|aqua,creak,...] [--per_dataset_dir DIR]
        [--holdout 50 [--eval_out data/CoT_data_eval.jsonl]]

DIR holds <name>_train.tsv files; datasets missing there are skipped with a warning.
Without --src the files are downloaded from FLAN into data/flan_cot/ (kept as a cache).
--holdout N moves N questions of each dataset (drawn with --seed) into an evaluation file for
scripts/evaluate.py, and keeps them, and any row repeating them, out of the training output.
"""

import random
import sys
import time
from pathlib import Path

from tqdm import tqdm

from alpaca_cot import DATA_DIR, io, outputs

from alpaca_cot.data import cot
from alpaca_cot.cli import UserError, as_list, run
from alpaca_cot.io import write_json_atomic, write_jsonl_atomic


def parse_datasets(datasets):
    if datasets == "all":
        return list(cot.DATASETS)
    names = as_list(datasets)
    unknown = [n for n in names if n not in cot.DATASETS]
    if unknown or not names:
        raise UserError(f"unknown dataset(s) {unknown or names}: choose from {', '.join(cot.DATASETS)}")
    return names


def tsv_paths(src, names, download: bool = True) -> dict:
    """The TSV of each dataset: in --src, or (without it) FLAN's downloaded into data/flan_cot (download=False:
    where they will be)."""
    if src is None:
        folder = DATA_DIR / "flan_cot"
        return {n: cot.download(n, folder) if download else folder / f"{n}_train.tsv" for n in names}
    if not Path(src).is_dir():
        raise UserError(f"--src {src}: not a directory")
    paths = {n: Path(src) / f"{n}_train.tsv" for n in names}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if len(missing) == len(names):
        raise UserError(f"--src {src}: none of {', '.join(f'{n}_train.tsv' for n in names)} found")
    if missing:
        print(f"warning: skipping datasets missing from {src}: {', '.join(missing)}", file=sys.stderr)
    return {n: p for n, p in paths.items() if n not in missing}


def planned(out, eval_out, per_dataset_dir, formatted: dict, evaluation=None, sized: bool = False) -> list:
    """What the script writes (outputs.Output); sized: with the bytes of the formatted records."""
    def size(records, lines=False):
        return io.json_size(records, lines) if sized else 0

    merged = [r for records in formatted.values() for r in records] if sized else None
    per_dataset = [outputs.Output(Path(per_dataset_dir) / f"{n}_train.json", "--per_dataset_dir", "json",
                             size(records)) for n, records in formatted.items()] if per_dataset_dir else []
    return [outputs.Output(out, "--out", "json", size(merged)),
            eval_out and outputs.Output(eval_out, "--eval_out", "jsonl", size(evaluation, lines=True)), *per_dataset]


def main(src=None, out="data/CoT_data.json", style="original", seed=42, datasets="all",
         per_dataset_dir=None, holdout=0, eval_out=None, overwrite=False):
    """Format FLAN CoT TSVs into instruction records, optionally holding out evaluation questions.

    Args:
        src: folder of <name>_train.tsv files (default: download FLAN's into data/flan_cot/)
        out: the training JSON list to write
        style: original (the 2023 files, byte for byte) or clean (real line breaks; for training)
        seed: seeds the template drawn for each row and the held-out questions
        datasets: all, or a comma-separated list of FLAN CoT dataset names
        per_dataset_dir: also write one <name>_train.json per dataset into this folder
        holdout: questions per dataset moved into the evaluation file (0: none)
        eval_out: the evaluation JSONL (default: beside --out, named <out stem>_eval.jsonl)
        overwrite: replace output files that exist (only JSON files, as this script writes)
    """
    start = time.perf_counter()
    if style not in cot.STYLES:
        raise UserError(f"unknown --style {style!r}: use one of {', '.join(cot.STYLES)}")
    if not isinstance(holdout, int) or isinstance(holdout, bool) or holdout < 0:
        raise UserError(f"--holdout must be a whole number >= 0, got {holdout!r}")
    names = parse_datasets(datasets)
    if holdout:
        eval_out = Path(eval_out or Path(out).with_name(Path(out).stem + "_eval.jsonl"))
    # The output rule (alpaca_cot/outputs.py) before any download or read: no output is an input TSV, an existing
    # one needs --overwrite, every folder is writable; the space is checked once the records are formatted.
    paths = tsv_paths(src, names, download=False)
    eval_out = eval_out if holdout else None
    outputs.check_outputs(planned(out, eval_out, per_dataset_dir, paths), [("TSV", p) for p in paths.values()], overwrite)
    paths = paths if src is not None else tsv_paths(src, names)
    templates = cot.load_templates()
    rng = random.Random(seed)
    rows, formatted = {}, {}
    # Everything is read and formatted before anything is written, so bad input leaves no file.
    for name, path in tqdm(paths.items(), desc="format", unit="set", disable=None):
        rows[name] = cot.read_tsv(path, style)
        formatted[name] = cot.format_dataset(name, rows[name], templates, rng)
    evaluation = []
    if holdout:
        formatted, evaluation, repeats = cot.holdout(formatted, rows, holdout, seed)
    outputs.check_space(planned(out, eval_out, per_dataset_dir, formatted, evaluation, sized=True))
    if holdout:
        write_jsonl_atomic(evaluation, eval_out)
        print(f"held out {len(evaluation)} questions -> {eval_out}; dropped {repeats} training rows "
              "that repeat one of them")

    merged = [r for records in formatted.values() for r in records]
    write_json_atomic(merged, out)
    if per_dataset_dir is not None:
        for name, records in formatted.items():
            write_json_atomic(records, Path(per_dataset_dir) / f"{name}_train.json")
    for name, records in formatted.items():
        print(f"{name:12s} {len(records):6d}")
    print(f"{'total':12s} {len(merged):6d} -> {out} (style {style}, seed {seed}, "
          f"{time.perf_counter() - start:.2f}s)")


if __name__ == "__main__":
    run(main)
