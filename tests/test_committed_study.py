"""The committed study (study/smollm2-135m): its numbers re-score from its predictions, and its
held-out sets re-derive from the sources and seed, disjoint from the training draw."""

import json
from pathlib import Path

import pytest

from alpaca_cot import ROOT, evaluation, study

STUDY = ROOT / "study" / "smollm2-135m"


@pytest.mark.parametrize("model", ["base", *study.MIXES])
def test_summary_equals_rescored_predictions(model):
    summary = json.loads((STUDY / "summary.json").read_text())
    rows = [evaluation.score_row(r) for r in evaluation.read_predictions(STUDY / "results" / model / "predictions.jsonl")]
    assert evaluation.summarize(rows) == summary["results"][model]
    assert json.loads((STUDY / "results" / model / "summary.json").read_text()) == summary["results"][model]


def test_held_out_sets_rederive_and_never_meet_training(shared_dir, tmp_path, monkeypatch):
    config = json.loads((STUDY / "config.json").read_text())
    monkeypatch.chdir(ROOT)  # the study was run from the repository root with ../shared paths
    sources = {k: str(Path(v)) if v else v for k, v in config["sources"].items()}
    manifest = study.prepare(tmp_path, sources, config)
    assert manifest == json.loads((STUDY / "data" / "manifest.json").read_text())
    for task in evaluation.TASKS:
        assert (tmp_path / "eval" / f"{task}.jsonl").read_text() == (STUDY / "eval" / f"{task}.jsonl").read_text()
    train = [r for name in study.SOURCES for r in json.loads((tmp_path / "data" / f"{name}.json").read_text())]
    keys = {study.key(r) for r in train}
    for task in evaluation.TASKS:
        for item in evaluation.load_items(tmp_path / "eval" / f"{task}.jsonl", task):
            assert study.key(item) not in keys
            assert not any(study.key(item) in k for k in keys if len(study.key(item)) >= 40)
