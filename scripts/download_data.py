"""Downloads a registered dataset into data/ as the JSON list that `--data NAME` reads.

    python scripts/download_data.py alpaca|belle|cot [--out PATH] [--src DIR]

alpaca and belle come from the Hugging Face hub; cot is built from the FLAN TSVs by
scripts/format_cot.py (--src DIR: TSVs already on disk instead of a download).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alpaca_cot import DATA_DIR  # noqa: E402
from alpaca_cot.cli import UserError, run  # noqa: E402
from alpaca_cot.data import REGISTRY  # noqa: E402
from alpaca_cot.io import write_json_atomic  # noqa: E402

HUB = {"alpaca": "yahma/alpaca-cleaned", "belle": "BelleGroup/train_0.5M_CN"}
FIELDS = ("instruction", "input", "output")


def fetch(dataset_id: str, out: Path) -> list[dict]:
    """The train split of a hub dataset as {instruction, input, output} records."""
    from datasets import load_dataset

    try:
        dataset = load_dataset(dataset_id, split="train")
    except Exception as e:  # offline, DNS, HTTP, hub errors all differ in type: report any of them
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not download {dataset_id} from the Hugging Face hub ({reason}); "
                        f"to place it by hand, save its train split as a JSON list of "
                        f"{{instruction, input, output}} records at {out}") from None
    missing = [f for f in FIELDS if f not in dataset.column_names]
    if missing:
        raise UserError(f"{dataset_id} has no column(s) {', '.join(missing)}; columns: {dataset.column_names}")
    columns = dataset.select_columns(list(FIELDS)).to_dict()
    return [dict(zip(FIELDS, values)) for values in zip(*(columns[f] for f in FIELDS))]


def main(name, out=None, src=None):
    """Download (or, for cot, build) a registered dataset as a JSON list of records.

    Args:
        name: alpaca, belle or cot.
        out: where the JSON list is written; the dataset's file in data/ by default.
        src: for cot, a folder of FLAN <name>_train.tsv files instead of downloading them.
    """
    if name not in REGISTRY or name == "demo":
        raise UserError(f"unknown dataset {name!r}; choose one of alpaca, belle, cot")
    out = Path(out) if out is not None else DATA_DIR / REGISTRY[name].file
    if name == "cot":
        # Not on the hub in this form: format_cot.py builds it from the FLAN TSVs.
        print(f"cot is built by scripts/format_cot.py; running it with --out {out}", flush=True)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from format_cot import main as format_cot

        format_cot(src=src, out=str(out))
        return
    records = fetch(HUB[name], out)
    write_json_atomic(records, out)
    print(f"{name}: {len(records)} records from {HUB[name]} -> {out}")


if __name__ == "__main__":
    run(main)
