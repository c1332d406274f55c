"""How often the FLAN CoT scorer reads what its readers read, on the labelled sample.

    python scripts/validate_scoring.py [--folder study/scoring-validation] [--show]

Prints, per batch of the sample and overall, the share of outputs where alpaca_cot/eval/reading.py reads the
answer the readers read (their adjudicated reading) and the share where the two readers agreed with each
other; --show lists every output the scorer reads otherwise.
"""

from pathlib import Path

from alpaca_cot.cli import UserError, run


def main(folder: str = "study/scoring-validation", show: bool = False):
    """Print the scorer's agreement with the readers' readings.

    Args:
        folder: the folder holding sample.jsonl and labels.jsonl
        show: also print every output the scorer reads otherwise than the readers did
    """
    from alpaca_cot.eval import validation

    folder = Path(folder)
    for name in ("sample.jsonl", "labels.jsonl"):
        if not (folder / name).is_file():
            raise UserError(f"{folder / name} not found")
    result = validation.agreement(validation.read_rows(folder / "sample.jsonl"),
                                  validation.read_rows(folder / "labels.jsonl"))
    print("| batch | outputs | scorer agrees with the readers | the two readers agreed |")
    print("|---|---:|---:|---:|")
    for batch, c in result["batches"].items():
        print(f"| {batch} | {c['n']} | {c['scorer_agrees']} ({100 * c['scorer_share']:.1f}%) | "
              f"{c['readers_agree']} ({100 * c['readers_share']:.1f}%) |")
    if show:
        for d in result["disagreements"]:
            print(f"\n{d['sample_id']} ({d['batch']}, {d['dataset']}): readers read {d['person']!r}, the scorer "
                  f"{d['scorer']!r} ({d['method']})\n  {d['output'][:400]!r}")
    return result


if __name__ == "__main__":
    run(main)
