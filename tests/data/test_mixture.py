"""--data mixtures (counts, weights, --max_records_per_source, drawn with the seed), duplicate removal and
decontamination (alpaca_cot/data/loader.py, alpaca_cot/data/dedup.py)."""

import json

import pytest

from alpaca_cot.data import catalog, loader, dedup
from alpaca_cot.cli import UserError


def records(prefix, n):
    return [{"instruction": f"{prefix} question number {i} about topic {i * 7}", "input": "", "output": f"a{i}"}
            for i in range(n)]


@pytest.fixture
def data_dir(tmp_path):
    for name, n in (("alpaca", 50), ("cot", 40), ("belle", 30)):
        (tmp_path / catalog.REGISTRY[name].file).write_text(json.dumps(records(name, n)), encoding="utf-8")
    return tmp_path


def load(spec, data_dir, **kwargs):
    logged = []
    files, columns = loader.load_mixture(spec, data_dir=data_dir, log=logged.append, **kwargs)
    return columns, logged


def test_counts_and_weights(data_dir):
    columns, logged = load("alpaca:20,cot:0.5-belle", data_dir)
    counts = {s: columns["source"].count(s) for s in dict.fromkeys(columns["source"])}
    assert counts == {"alpaca_data_cleaned": 20, "CoT_data": 20, "belle_data_cn": 30}
    assert "alpaca_data_cleaned: drew 20 of 50 records (seed 42)" in logged
    upsampled, _ = load("belle:1.5", data_dir)
    assert len(upsampled["output"]) == 45 and len(set(upsampled["output"])) == 30
    assert load("belle:1000", data_dir)[0]["output"] == [r["output"] for r in records("belle", 30)]


def test_draws_are_reproducible_by_seed_and_per_source(data_dir):
    a = load("alpaca:10,cot:5", data_dir, seed=1)[0]
    assert a == load("alpaca:10,cot:5", data_dir, seed=1)[0]
    assert a["output"][:10] != load("alpaca:10,cot:5", data_dir, seed=2)[0]["output"][:10]
    # Adding a source does not change another source's draw.
    assert load("belle,alpaca:10", data_dir, seed=1)[0]["output"][30:] == a["output"][:10]
    # Drawn records keep their file order.
    drawn = [int(o[1:]) for o in a["output"][:10]]
    assert drawn == sorted(drawn)


def test_max_records_per_source(data_dir):
    columns, _ = load("alpaca-cot:0.5-belle", data_dir, max_records_per_source=12)
    assert len(columns["output"]) == 36
    with pytest.raises(UserError, match="--max_records_per_source must be a positive integer"):
        load("alpaca", data_dir, max_records_per_source=0)


@pytest.mark.parametrize("spec, message", [("alpaca:x", "after ':' comes a record count"),
                                           ("alpaca:0", "must be > 0"), ("alpaca:0.0", "must be > 0"),
                                           # one piece, not split on its '-': the count is what is wrong
                                           ("alpaca:-1", "'alpaca:-1': the count or weight after ':' must be > 0"),
                                           ("alpaca:-0.5-cot", "'alpaca:-0.5': the count or weight")])
def test_bad_specs(data_dir, spec, message):
    with pytest.raises(UserError, match=message):
        load(spec, data_dir)


def test_a_source_named_twice_with_two_counts_is_refused(data_dir, tmp_path):
    """demo:5,demo:10 used to keep the first count and drop the second without a word."""
    with pytest.raises(UserError, match=r"'alpaca:5,alpaca:10' names .*alpaca_data_cleaned.json twice, with ':5' "
                                        r"and ':10'; name each source once"):
        load("alpaca:5,alpaca:10", data_dir)
    with pytest.raises(UserError, match="twice, with all its records and ':3'"):
        load(f"alpaca,{data_dir / 'alpaca_data_cleaned.json'}:3", data_dir)
    assert len(load("alpaca:5-alpaca:5", data_dir)[0]["output"]) == 5  # the same count twice: read once


def test_paths_take_specs_too(data_dir, tmp_path):
    path = data_dir / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records("mine", 10)), encoding="utf-8")
    assert len(load(f"{path}:3", data_dir)[0]["output"]) == 3
    assert catalog.resolve(f"{path}:3,alpaca", data_dir=data_dir)[0] == path


def test_normalised_keys():
    assert dedup.normalise("  What's  the\\nANSWER?! ") == "what s the answer"
    assert dedup.prompt_key({"instruction": "Hi", "input": "there", "history": [["Before", "x"]]}) == "before hi there"


def test_exact_and_near_duplicates_within_and_across_sources(tmp_path):
    a = [{"instruction": "Describe the water cycle in three sentences.", "input": "", "output": "1"},
         {"instruction": "describe the WATER cycle, in three sentences!", "input": "", "output": "2"},
         {"instruction": "Name the largest planet in the solar system.", "input": "", "output": "3"}]
    b = [{"instruction": "Please describe the water cycle in three sentences.", "input": "", "output": "4"},
         {"instruction": "Name the largest planet in the solar system.", "input": "", "output": "5"},
         {"instruction": "Write a haiku about autumn leaves.", "input": "", "output": "6"}]
    exact, removed = dedup.deduplicate([("a", a), ("b", b)], near=False)
    assert [[r["output"] for r in rs] for _, rs in exact] == [["1", "3"], ["4", "6"]] and removed == {"a": 1, "b": 1}
    near, removed = dedup.deduplicate([("a", a), ("b", b)], near=True)
    assert [[r["output"] for r in rs] for _, rs in near] == [["1", "3"], ["6"]] and removed == {"a": 1, "b": 2}


def test_near_needs_similarity_not_a_shared_topic():
    a = [{"instruction": "Write a poem about the sea and its endless waves.", "input": "", "output": "1"},
         {"instruction": "Write a recipe for a chocolate cake with walnuts.", "input": "", "output": "2"},
         {"instruction": "Describe the water cycle in three sentences.", "input": "", "output": "3"},
         {"instruction": "Describe the water cycle in three short sentences.", "input": "", "output": "4"}]
    # The last two share a Jaccard similarity just under NEAR: a MinHash collision alone removes nothing.
    kept, removed = dedup.deduplicate([("a", a)], near=True)
    assert removed == {"a": 0}


def test_planted_evaluation_row_is_removed(data_dir, tmp_path):
    """An evaluation question planted in a training source (alone, and inside a FLAN-style template) goes."""
    question = "A train leaves at 3 pm and travels 120 km at 60 km/h. When does it arrive?"
    planted = records("cot", 40)
    planted[7] = {"instruction": question, "input": "", "output": "5 pm"}
    planted[20] = {"instruction": f"Answer the following question.\n{question}\nLet's think step by step.",
                   "input": "", "output": "It arrives at 5 pm."}
    (data_dir / "CoT_data.json").write_text(json.dumps(planted), encoding="utf-8")
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps({"task": "cot", "instruction": question.upper(), "input": "", "answer": "5"}) + "\n"
                         + json.dumps({"question": "Unrelated question nobody asked?", "std_answer": "x"}) + "\n")
    columns, logged = load("alpaca-cot", data_dir, decontaminate=str(eval_file))
    assert question not in " ".join(columns["instruction"]) and len(columns["output"]) == 88
    assert "decontamination against 2 evaluation rows removed 2 training records" in logged
    assert "  per source: alpaca_data_cleaned 0, CoT_data 2 (total 2)" in logged


def test_decontaminate_file_errors(data_dir, tmp_path):
    with pytest.raises(UserError, match="--decontaminate file .* not found"):
        load("alpaca", data_dir, decontaminate=str(tmp_path / "nope.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"answer": "no question"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl: line 2: field 'instruction' \(or 'question'\) is missing"):
        load("alpaca", data_dir, decontaminate=str(bad))


def test_an_empty_decontaminate_file_is_refused(data_dir, tmp_path):
    """An empty evaluation file used to remove nothing without a word."""
    for name, text in (("empty.jsonl", ""), ("blank.jsonl", "\n\n"), ("empty.json", "[]")):
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=f"{name}: no evaluation rows in this --decontaminate file"):
            load("alpaca", data_dir, decontaminate=str(tmp_path / name))


def test_near_matching_shows_a_progress_bar(data_dir, tmp_path, monkeypatch):
    bars = []
    real = dedup.tqdm

    def recording(**kwargs):
        bars.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(dedup, "tqdm", recording)
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps({"instruction": "Unrelated question nobody asked?"}) + "\n")
    load("alpaca-cot", data_dir, dedup_mode="near", decontaminate=str(eval_file))
    shown = [(b["desc"], b["total"]) for b in bars if b["disable"] is not True]  # None: shown on a terminal
    assert shown == [("near decontamination", 90), ("near dedup", 90)]
    bars.clear()
    load("alpaca-cot", data_dir, dedup_mode="exact", decontaminate=str(eval_file))
    assert all(b["disable"] is True for b in bars)  # exact matching is fast: no bar


def test_output_folder_names_drop_mixture_specs():
    assert catalog.name_of("alpaca:2000,cot:0.5") == "alpaca-cot"
    assert catalog.name_of("data/mine.jsonl:100,belle") == "mine-belle"
