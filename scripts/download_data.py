"""Downloads catalogue datasets (data/catalog.json) into data/ as the JSON lists that `--data NAME` reads.

    python scripts/download_data.py NAME[,NAME...] [--out PATH] [--src DIR]

Hub entries are loaded through `datasets` at their pinned revision, converted to uniform
{instruction, input, output[, history]} records, checked as `--data` checks them (bad rows are
dropped and counted) and written atomically to data/<file>. cot is built from the FLAN TSVs by
scripts/format_cot.py (--src DIR: TSVs already on disk instead of a download).
"""

import sys
from collections import Counter
from pathlib import Path

from alpaca_cot import DATA_DIR, hub, io, outputs
from alpaca_cot.data.catalog import registry
from alpaca_cot.cli import UserError, as_list, run
from alpaca_cot.data.convert import convert
from alpaca_cot.data.loader import _check
from alpaca_cot.io import write_json_atomic

LOAD_ARGS = {"config": "name", "split": "split", "revision": "revision", "data_files": "data_files"}


def fetch(source: dict, out: Path):
    """The source's split as a datasets.Dataset, loaded at its revision."""
    from datasets import load_dataset

    kwargs = {arg: source[key] for key, arg in LOAD_ARGS.items() if source.get(key) is not None}
    # One request with a short timeout first: datasets' own client retries for half a minute before it fails.
    hub.check_hub_reachable(source["hub"], kind="datasets")
    try:
        return load_dataset(source["hub"], **kwargs)
    except Exception as e:  # offline, DNS, HTTP, hub errors all differ in type: report any of them
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not download {source['hub']} from the Hugging Face hub ({reason}); "
                        f"to place it by hand, save its {source.get('split', 'train')} split as a JSON list of "
                        f"{{instruction, input, output}} records at {out}") from None


def uniform_records(rows, entry: dict, log=print) -> list[dict]:
    """Converted and checked records; rows that fail are dropped and counted by reason."""
    records, bad = [], Counter()
    for record, why in convert(rows, entry):
        if record is not None:
            record, why = _check(record)
        if record is None:
            bad[why] += 1
            continue
        records.append(record)
    for why, n in bad.most_common():
        log(f"  dropped {n} rows: {why}")
    return records


def download(name: str, out: Path, src=None, log=print, overwrite: bool = False):
    entry = registry()[name].entry
    if "builder" in entry["source"]:
        # Not on the hub in this form: format_cot.py builds it from the FLAN TSVs.
        log(f"{name} is built by scripts/format_cot.py; running it with --out {out}")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from format_cot import main as format_cot

        format_cot(src=src, out=str(out), overwrite=overwrite)
        return
    if "hub" not in entry["source"]:
        raise UserError(f"{name} is not downloaded: {registry()[name].how_to_get}")
    records = uniform_records(fetch(entry["source"], out), entry, log)
    if not records:
        raise UserError(f"{entry['source']['hub']}: no usable records; nothing written to {out}")
    outputs.check_space([outputs.Output(out, "--out", "json", io.json_size(records))])
    write_json_atomic(records, out)
    log(f"{name}: {len(records)} records from {entry['source']['hub']} -> {out}")


def main(name, out=None, src=None, overwrite=False):
    """Download (or, for cot, build) catalogue datasets as JSON lists of records.

    Args:
        name: one or more names from data/catalog.json, comma-separated (alpaca,dolly) or joined by -.
        out: where the JSON list is written (one name only); the dataset's file in data/ by default.
        src: for cot, a folder of FLAN <name>_train.tsv files instead of downloading them.
        overwrite: replace a file that exists (a JSON file only, as this script writes).
    """
    names = [n for part in as_list(name) for n in as_list(part.replace("-", ","))]
    REGISTRY = registry()
    known = [n for n in REGISTRY if n != "demo"]
    for n in names:
        if n not in known:
            raise UserError(f"unknown dataset {n!r}; choose one of {', '.join(known)}")
    if out is not None and len(names) > 1:
        raise UserError(f"--out names one file, but {len(names)} datasets were asked for; leave --out out")
    targets = {n: Path(out) if out is not None else DATA_DIR / REGISTRY[n].file for n in names}
    # The output rule (alpaca_cot/outputs.py) before any download: --overwrite to replace, a writable folder; the
    # space once the records are converted. cot: format_cot.py checks its own.
    outputs.check_outputs([outputs.Output(path, "--out", "json") for n, path in targets.items() if n != "cot"], (), overwrite)
    for n, path in targets.items():
        download(n, path, src, log=lambda m: print(m, flush=True), overwrite=overwrite)


if __name__ == "__main__":
    run(main)
