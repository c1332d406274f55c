"""Renders the dataset catalogue (data/catalog.json) as the README's markdown data table.

    python scripts/data_card.py [--base_model PATH_OR_ID] [--out FILE]

One row per entry: name, languages, task, records, licence and source. A value the catalogue marks
unverified carries a `?`. With --base_model, every entry whose file is in data/ also gets measured
token lengths (p50 / p90 / max, BOS and EOS included, as scripts/data_stats.py counts them).
"""

from pathlib import Path

from alpaca_cot import DATA_DIR
from alpaca_cot.data.catalog import load_catalog
from alpaca_cot.cli import run


def _mark(entry: dict, field: str, text: str) -> str:
    return f"{text}?" if field in entry["unverified"] else text


def source_text(entry: dict) -> str:
    source = entry["source"]
    if "hub" in source:
        text = f"`{source['hub']}`"
        if source.get("data_files"):
            text += _mark(entry, "source.data_files", f" `{source['data_files']}`")
        return text + (f" @ `{source['revision'][:7]}`" if source.get("revision") else "")
    if "builder" in source:
        return "FLAN CoT TSVs via `scripts/format_cot.py`"
    return f"ships with the project (`{source['local']}`)"


def measured(path: Path, tokenizer, prompter) -> str:
    """p50 / p90 / max tokens of a downloaded file, or an empty cell."""
    from alpaca_cot.data import loader
    from alpaca_cot.data.stats import length_stats

    if tokenizer is None or not path.is_file():
        return ""
    records, _ = loader.load_file(path, skip_bad_records=True)
    if not records:
        return ""
    total = length_stats(loader.to_columns([(path, records)]), tokenizer, prompter, cutoff_len=512)["total"]
    return f"{total['records']:,} in file; {total['p50']} / {total['p90']} / {total['max']}"


def table(entries: dict, tokenizer=None, prompter=None, data_dir: Path = DATA_DIR) -> str:
    header = ["name", "language", "task", "records", "license", "source"]
    if tokenizer is not None:
        header.append("tokens p50 / p90 / max")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, e in entries.items():
        records = "?" if e["records"] is None else _mark(e, "records", f"{e['records']:,}")
        cells = [f"`{name}`", ", ".join(e["languages"]), e["task"], records, _mark(e, "license", e["license"]),
                 source_text(e)]
        if tokenizer is not None:
            cells.append(measured(data_dir / e["file"], tokenizer, prompter))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(base_model=None, out=None, prompt_template_name="alpaca", overwrite=False):
    """Print (or write) the catalogue as a markdown table.

    Args:
        base_model: local folder or hub id whose tokenizer measures the files already in data/; none: no measures.
        out: write the table to this file instead of printing it.
        prompt_template_name: the template the token lengths are measured under (alpaca).
        overwrite: replace an existing --out file (a text file only).
    """
    from alpaca_cot.data import catalog
    from alpaca_cot import outputs

    if out is not None:  # the output rule (alpaca_cot/outputs.py): not the catalogue, --overwrite to replace
        outputs.check_outputs([outputs.Output(out, "--out", "text", 1 << 20)], [("the catalogue", catalog.CATALOG_PATH)],
                         overwrite)
    tokenizer = prompter = None
    if base_model is not None:
        from alpaca_cot.model import models
        from alpaca_cot.data.preprocess import Prompter

        prompter = Prompter(prompt_template_name)
        tokenizer = models.load_tokenizer(base_model)
        prompter.bind(tokenizer)
    text = table(load_catalog(), tokenizer, prompter)
    if out is None:
        print(text, end="")
        return
    from alpaca_cot.io import atomic_open

    with atomic_open(out) as f:
        f.write(text)


if __name__ == "__main__":
    run(main)
