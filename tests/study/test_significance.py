"""The study's statistics (alpaca_cot/study/significance.py), chance baselines (chance.py) and few-shot exemplars."""

import json

import numpy as np
import pytest

from alpaca_cot.eval import chance, evaluation

from alpaca_cot.study import significance, grid


def test_holm_matches_its_definition():
    # sorted p: 0.01, 0.02, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.02), max(0.04, 1 x 0.04)
    assert significance.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert significance.holm([0.5, 0.9]) == [1.0, 1.0]


def test_a_real_difference_is_found_and_none_is_not():
    rng = np.random.default_rng(0)
    a = (rng.random((3, 400)) < 0.30).astype(float)
    b = (rng.random((3, 400)) < 0.45).astype(float)
    found = significance.compare(a, b, draws=2000)
    assert found["low"] < found["diff"] < found["high"] and found["low"] > 0 and found["p"] < 0.01
    assert found["diff"] == pytest.approx(b.mean() - a.mean())
    assert len(found["per_seed"]) == 3 and 0 < found["mde"] < 0.15
    same = significance.compare(a, (rng.random((3, 400)) < 0.30).astype(float), draws=2000)
    assert same["low"] < 0 < same["high"] and same["p"] > 0.05 and significance.verdict(same) == "no detectable difference"


def test_seed_spread_widens_the_interval():
    """Three seeds that disagree give a wider interval than three that agree, on the same questions."""
    rng = np.random.default_rng(1)
    base = (rng.random((1, 300)) < 0.5).astype(float)
    agreeing = np.repeat((rng.random((1, 300)) < 0.6).astype(float), 3, axis=0)
    spread = agreeing.copy()
    spread[0, :60], spread[2, -60:] = 0, 1  # seed 1 worse, seed 3 better
    narrow, wide = significance.compare(base, agreeing, draws=3000), significance.compare(base, spread, draws=3000)
    assert wide["high"] - wide["low"] > narrow["high"] - narrow["low"]
    assert significance.estimate(spread)["seed_sd"] > 0 == significance.estimate(agreeing)["seed_sd"]


def test_chance_baselines_of_known_questions():
    aqua = {"task": "cot", "dataset": "aqua", "gold": "(B)", "instruction": "Q?\nOptions:\n(A) 1\n(B) 2\n(C) 3\n(D) 4"}
    yes = {"task": "cot", "dataset": "creak", "gold": "yes", "instruction": "Is it?\nOptions:\n- yes\n- no"}
    ecqa = {"task": "cot", "dataset": "ecqa", "gold": "box", "instruction": "Where?\nOptions:\n- city\n- box\n- car"}
    found = chance.baselines([aqua, yes, ecqa], {"aqua": "B", "creak": "no", "ecqa": 1})
    assert found["uniform"] == {"aqua": 0.25, "creak": 0.5, "ecqa": round(1 / 3, 4), "all": round((0.25 + 0.5 + 1 / 3) / 3, 4)}
    assert found["majority"] == {"aqua": 1.0, "creak": 0.0, "ecqa": 1.0, "all": round(2 / 3, 4)}
    rows = {"creak": [("q1", "yes", ""), ("q2", "no", ""), ("q3", "yes", "")],
            "ecqa": [("Where?\nOptions:\n- a\n- b", "b", ""), ("Who?\nOptions:\n- c\n- d", "d", "")]}
    assert chance.majority_answers(rows) == {"creak": "yes", "ecqa": 1}


def test_shots_come_from_training_rows_and_precede_the_question(shared_dir, tmp_path):
    data = shared_dir / "data"
    sources = {"alpaca": str(data / "alpaca_cleaned.sample.json"), "belle": str(data / "belle_cn.sample.json"),
               "cot_src": str(data / "flan_cot"), "belle_eval": None}
    config = {"eval_seed": 0, "english_eval": 5, "chinese_eval": 5, "belle_eval": 0, "cot_eval_per_dataset": 30,
              "seeds": [1], "records_per_source": 10, "shots": 2}
    manifest = grid.prepare(tmp_path, sources, config)
    shots = json.loads((tmp_path / "eval" / "shots.json").read_text())
    items = evaluation.load_items(tmp_path / "eval" / "cot.jsonl", "cot")
    assert manifest["shots"] == {d: 2 for d in shots} and len(shots) == 7
    exemplars = [grid.key(r) for rs in shots.values() for r in rs]
    assert not any(grid.key(i) in e for e in exemplars for i in items), "an exemplar holds an evaluation question"
    prompted = evaluation.with_shots(items, shots)
    gsm = next(i for i in prompted if i["dataset"] == "gsm8k")
    assert gsm["context"].startswith(shots["gsm8k"][0]["instruction"]) and gsm["instruction"] == next(
        i for i in items if i["dataset"] == "gsm8k")["instruction"]
    assert manifest["chance"]["uniform"]["all"] == pytest.approx(
        sum(chance.uniform(i) for i in items) / len(items), abs=1e-4)


def test_compressed_predictions_are_the_same_bytes_each_time(tmp_path):
    """The study's predictions.jsonl.gz: no timestamp nor temporary name in the header, so writing the same
    rows again changes no committed byte; loader.parse reads it back."""
    from alpaca_cot.data import loader
    from alpaca_cot.io import write_jsonl_gz_atomic

    rows = [{"task": "cot", "output": "So the answer is (B).", "n": i} for i in range(3)]
    write_jsonl_gz_atomic(rows, tmp_path / "a.jsonl.gz")
    first = (tmp_path / "a.jsonl.gz").read_bytes()
    write_jsonl_gz_atomic(rows, tmp_path / "a.jsonl.gz")
    assert (tmp_path / "a.jsonl.gz").read_bytes() == first
    assert [r for _, r in loader.parse(tmp_path / "a.jsonl.gz")] == rows
