"""The evaluation tasks' registry (alpaca_cot/eval/tasks/): a benchmark added as one file of that folder is
loaded, asked, scored, summarised and re-scored by scripts/evaluate.py; --eval names any registered task."""

import json
import os
import shutil
import textwrap

import pytest

from alpaca_cot import ROOT

from alpaca_cot.eval import evaluation, predictions
from alpaca_cot.eval.tasks import TASKS
from conftest import one_error_line, run_python

EVALUATE = ROOT / "scripts" / "evaluate.py"
# A benchmark of its own: does the answer name the record's keyword.
KEYWORD_TASK = '''
"""Answers that name a keyword."""

from alpaca_cot.eval.tasks.base import Task, field, mean, percent


class Keyword(Task):
    name = "keyword"
    scores = ("named",)

    def item(self, path, place, raw):
        return dict(super().item(path, place, raw), dataset="keywords", gold=field(path, place, raw, "keyword"))

    def score(self, row):
        return {"named": row["gold"].lower() in row["output"].lower()}

    def summarize(self, rows):
        return {"n": len(rows), "named": mean(r["named"] for r in rows)}

    def markdown(self, summary):
        return [f"Keyword (n={summary['n']}): named {percent(summary['named'])}%", ""]
'''
# Load -> rows -> score -> summarize -> markdown in the package copy, as evaluation.evaluate does without a model.
DRIVER = '''
import json, sys
from alpaca_cot.eval import evaluation
rows = evaluation.expand(evaluation.load_items(sys.argv[1], "keyword"))
scored = [evaluation.score_row(dict(r, prompt="", output=o)) for r, o in zip(rows, ["It is PARIS.", "No idea."])]
summary = evaluation.summarize(scored)
print(json.dumps({"tasks": list(evaluation.TASKS), "rows": scored, "summary": summary,
                  "markdown": evaluation.markdown(summary, "keyword run")}))
'''


def package_with_task(tmp_path, name: str, source: str) -> dict:
    """A copy of the package with one more file in eval/tasks/; the environment that imports the copy."""
    root = tmp_path / "copy"
    shutil.copytree(ROOT / "alpaca_cot", root / "alpaca_cot", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("data", "templates"):
        (root / folder).symlink_to(ROOT / folder)
    (root / "alpaca_cot" / "eval" / "tasks" / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return dict(os.environ, PYTHONPATH=str(root))


def test_a_benchmark_added_as_one_file_runs_through_evaluation_and_rescoring(tmp_path):
    env = package_with_task(tmp_path, "keyword", KEYWORD_TASK)
    items = tmp_path / "keywords.jsonl"
    items.write_text(json.dumps({"question": "The capital of France?", "keyword": "Paris"}) + "\n"
                     + json.dumps({"instruction": "The capital of Peru?", "input": "", "keyword": "Lima"}) + "\n")
    (tmp_path / "driver.py").write_text(DRIVER, encoding="utf-8")
    r = run_python(tmp_path / "driver.py", items, env=env)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert found["tasks"] == ["cot", "chinese", "english", "keyword"]
    assert [(row["id"], row["cot_trigger"], row["gold"], row["named"]) for row in found["rows"]] == \
        [("keyword-0", False, "Paris", True), ("keyword-1", False, "Lima", False)]
    assert found["summary"] == {"keyword": {"n": 2, "named": 0.5}}
    assert "Keyword (n=2): named 50.0%" in found["markdown"].splitlines()

    stale = tmp_path / "predictions.jsonl"  # scores written wrong: re-scoring recomputes them from output and gold
    stale.write_text("".join(json.dumps(dict(row, named=False)) + "\n" for row in found["rows"]))
    r = run_python(EVALUATE, "--predictions", stale, "--out", tmp_path / "scored", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "scored" / "summary.json").read_text()) == found["summary"]
    assert "Keyword (n=2): named 50.0%" in (tmp_path / "scored" / "summary.md").read_text().splitlines()

    bad = tmp_path / "bad.jsonl"  # --eval reaches the new task: its record's missing field, in one line
    bad.write_text(json.dumps({"instruction": "The capital of Chile?"}) + "\n")
    r = run_python(EVALUATE, "--base_model", "smollm2-135m", "--eval", f"keyword={bad}", "--out", tmp_path / "o", env=env)
    assert one_error_line(r) == f"error: {bad}: line 1: field 'keyword' is missing or empty"
    assert not (tmp_path / "o").exists()


def test_a_task_file_with_a_taken_name_fails_at_import(tmp_path):
    env = package_with_task(tmp_path, "zz_copy", KEYWORD_TASK.replace('name = "keyword"', 'name = "cot"'))
    r = run_python("-c", "import alpaca_cot.eval.tasks", env=env, cwd=tmp_path)
    assert r.returncode != 0 and "duplicate name 'cot'" in r.stderr


def test_the_registry_holds_the_three_tasks_in_their_order():
    assert list(TASKS) == ["cot", "chinese", "english"] and list(evaluation.TASKS) == list(TASKS)
    assert [t.triggers for t in TASKS.values()] == [(False, True), (False,), (False,)]
    assert predictions.check_prediction({"task": "cot", "instruction": "q", "output": "o", "gold": "yes"}) == \
        "not a prediction row (field 'dataset')"
    assert predictions.check_prediction({"task": "english", "instruction": "q", "output": "o", "gold": "g",
                                         "dataset": None, "input": None}) is None


def test_an_unknown_eval_task_is_one_line_before_any_model_loads(tmp_path):
    r = run_python(EVALUATE, "--base_model", "smollm2-135m", "--eval", "maths=m.jsonl", "--out", tmp_path / "o")
    assert one_error_line(r) == "error: --eval: unknown evaluation task 'maths' (registered: cot, chinese, english)"
    r = run_python(EVALUATE, "--base_model", "smollm2-135m", "--eval", "cot", "--out", tmp_path / "o")
    assert one_error_line(r) == ("error: --eval expects name=FILE[,name=FILE...] (tasks: cot, chinese, english), "
                                 "got 'cot'")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--cot_eval", "--eval cot=", "--eval english=NO,cot="])
def test_eval_names_a_task_as_its_own_flag_does(tmp_path, flag):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "cot", "dataset": "gsm8k", "instruction": "q", "answer": "seven"}\n', encoding="utf-8")
    missing = tmp_path / "no.jsonl"
    name, _, value = flag.partition(" ")
    r = run_python(EVALUATE, "--base_model", "smollm2-135m", name, f"{value.replace('NO', str(missing))}{bad}",
                   "--out", tmp_path / "o")
    assert one_error_line(r) == (f"error: evaluation file {missing} not found" if "NO" in flag
                                 else f"error: {bad}: line 1: field 'answer' 'seven' is not a number answer")
    assert not (tmp_path / "o").exists()
