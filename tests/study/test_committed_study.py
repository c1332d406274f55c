"""The committed study (study/smollm2-135m): its numbers recompute from its predictions, and its held-out
sets and training draws re-derive from the sources and seeds, disjoint from each other."""

import json
from pathlib import Path

import pytest

from alpaca_cot import ROOT

from alpaca_cot.eval import evaluation

from alpaca_cot.study import report, significance, grid

STUDY = ROOT / "study" / "smollm2-135m"
CONFIG = json.loads((STUDY / "config.json").read_text())


@pytest.fixture(scope="module")
def rows():
    return report.load_rows(STUDY, CONFIG)


def test_every_model_was_evaluated_on_the_same_questions(rows):
    assert set(rows) == set(grid.models(CONFIG)) and len(rows) == 13
    ids = {m: sorted((r["id"], r["cot_trigger"]) for r in model_rows) for m, model_rows in rows.items()}
    assert len({tuple(v) for v in ids.values()}) == 1


def test_per_model_summaries_equal_the_rescored_predictions(rows):
    for model, model_rows in rows.items():
        assert json.loads((STUDY / "results" / model / "summary.json").read_text()) == evaluation.summarize(model_rows)


def test_report_numbers_recompute_from_the_predictions(rows):
    summary = json.loads((STUDY / "summary.json").read_text())["results"]
    for mix in ["base", *CONFIG["mixes"]]:
        for metric in ("cot", "cot_trigger", "chinese", "rouge_l"):
            again = significance.estimate(report.matrix(rows, report.seeds_of(CONFIG, mix), metric))
            assert again == summary["mixes"][mix][metric], (mix, metric)
    primary = [c for c in report.comparisons(rows, CONFIG) if c["family"] == "primary"]
    assert primary == [c for c in summary["comparisons"] if c["family"] == "primary"]


def test_held_out_sets_and_training_draws_rederive_and_never_meet(shared_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the study was run from the repository root with ../shared paths
    sources = {k: str(Path(v)) if v else v for k, v in CONFIG["sources"].items()}
    manifest = grid.prepare(tmp_path, sources, CONFIG)
    assert manifest == json.loads((STUDY / "data" / "manifest.json").read_text())
    for task in evaluation.TASKS:
        assert (tmp_path / "eval" / f"{task}.jsonl").read_text() == (STUDY / "eval" / f"{task}.jsonl").read_text()
    for seed in CONFIG["seeds"]:
        train = [r for name in grid.SOURCES for r in json.loads((tmp_path / "data" / f"seed-{seed}" / f"{name}.json").read_text())]
        keys = {grid.key(r) for r in train}
        joined = "\n".join(keys)  # one search per question for "no training record contains it"
        for task in evaluation.TASKS:
            for item in evaluation.load_items(tmp_path / "eval" / f"{task}.jsonl", task):
                assert grid.key(item) not in keys
                assert len(grid.key(item)) < 40 or grid.key(item) not in joined
