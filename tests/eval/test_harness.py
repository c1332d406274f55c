"""scripts/evaluate.py --lm_eval: lm-evaluation-harness on the base with the adapter unmerged, offline on a
local task (tests/fixtures/lm_eval: questions written for this project); the registry's tasks and one-line
errors for what cannot run."""

import importlib.util
import json

import pytest

from alpaca_cot import ROOT
from alpaca_cot.cli import UserError
from conftest import run_python, small_run

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="pip install lm-eval (make setup does)")
DATA = ROOT / "tests" / "fixtures" / "lm_eval" / "arith_choice.jsonl"


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    (folder / "arith_choice.yaml").write_text(f"""task: arith_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {DATA}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return folder


@pytest.fixture(scope="module")
def evaluate():
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_the_harness_scores_the_base_with_its_adapter_unmerged(tiny_llama, train_file, tasks, tmp_path):
    small_run(tiny_llama, train_file, tmp_path / "adapter", max_steps=2)
    r = run_python(ROOT / "scripts" / "evaluate.py", "--base_model", tiny_llama, "--lora_weights", tmp_path / "adapter",
                   "--out", tmp_path / "tuned", "--lm_eval", "arith_choice", "--lm_eval_include", tasks,
                   "--batch_size", "4", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "tuned" / "summary.json").read_text())
    assert summary["lm_eval"]["samples"] == {"arith_choice": 6}
    scores = summary["lm_eval"]["tasks"]["arith_choice"]
    assert 0 <= scores["acc"] <= 1 and "acc_stderr" in scores
    assert "| arith_choice | acc |" in (tmp_path / "tuned" / "summary.md").read_text()
    assert not (tmp_path / "tuned" / "predictions.jsonl").exists()


@pytest.mark.parametrize("flags,message", [
    ({"lm_eval": "gsm8kk"}, "no task 'gsm8kk' in lm-evaluation-harness; did you mean gsm8k"),
    ({"lm_eval": "arith_choice", "lm_eval_include": "nowhere"}, "is not a folder"),
    ({"lm_eval": "gsm8k", "limit": 2}, "a task's data could not be loaded"),  # its data is on the hub: offline here
    ({"lm_eval": "gsm8k", "quantization": "8bit"}, "--quantization none"),
])
def test_what_cannot_run_is_one_line(flags, message, tiny_llama, evaluate, tmp_path):
    with pytest.raises(UserError, match=message):
        evaluate(base_model=str(tiny_llama), out=str(tmp_path / "o"), **flags)
    assert not (tmp_path / "o" / "summary.json").exists()


def test_metric_names_keep_the_harness_filter():
    from alpaca_cot.eval.harness import _metric_name

    assert [_metric_name(k) for k in ("acc,none", "acc_stderr,none", "exact_match,strict-match",
                                      "exact_match_stderr,flexible-extract")] == \
        ["acc", "acc_stderr", "exact_match/strict-match", "exact_match/flexible-extract_stderr"]
