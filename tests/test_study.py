"""scripts/study.py end to end on a tiny model: every cell, a kill and a resume, the report (CPU)."""

import json
import os
import runpy
import signal
import subprocess
import sys
import time

from alpaca_cot import ROOT, dedup, evaluation
from conftest import only_error, run_python


def study_cmd(tiny_llama, shared_dir, out):
    data = shared_dir / "data"
    return [sys.executable, str(ROOT / "scripts" / "study.py"), "--base_model", tiny_llama, "--out", out,
            "--alpaca", data / "alpaca_cleaned.sample.json", "--belle", data / "belle_cn.sample.json",
            "--cot_src", data / "flan_cot", "--belle_eval", data / "belle_eval" / "eval_set.json",
            "--records_per_source", "8", "--cot_eval_per_dataset", "2", "--chinese_eval", "3",
            "--belle_eval_records", "3", "--english_eval", "3", "--max_new_tokens", "6", "--num_epochs", "1",
            "--batch_size", "8", "--micro_batch_size", "8", "--cutoff_len", "128",
            "--lora_target_modules", "q_proj,v_proj"]


def test_study_runs_every_cell_resumes_after_a_kill_and_reports(tiny_llama, shared_dir, tmp_path, monkeypatch,
                                                                capsys):
    out = tmp_path / "study"
    cmd = [str(c) for c in study_cmd(tiny_llama, shared_dir, out)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "adapters" / "alpaca" / "train_summary.json").exists():
        assert first.poll() is None and time.time() < deadline, "the study stopped before its first cell was done"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # kill -9, mid-study
    first.wait()
    assert not (out / "report.md").exists()

    # The same command again, run as its own process would run it but in this one: torch and transformers,
    # already imported here, are not started a second time.
    monkeypatch.setattr(sys, "argv", cmd[1:])
    capsys.readouterr()
    runpy.run_path(cmd[1], run_name="__main__")
    second = capsys.readouterr().out
    assert "skip train alpaca: done" in second
    assert "== train alpaca-belle-cot" in second and "== evaluate base" in second

    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["train_records"] == {"alpaca": 8, "belle": 8, "cot": 8}
    train = [dedup.prompt_key(r) for name in ("alpaca", "belle", "cot")
             for r in json.loads((out / "data" / f"{name}.json").read_text(encoding="utf-8"))]
    for task in evaluation.TASKS:
        for item in evaluation.load_items(out / "eval" / f"{task}.jsonl", task):
            assert not any(dedup.prompt_key(item) in key for key in train), item["instruction"]

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["results"]) == {"base", "alpaca", "alpaca-cot", "alpaca-belle", "alpaca-belle-cot"}
    for model, result in summary["results"].items():
        rescored = evaluation.summarize([evaluation.score_row(r) for r in evaluation.read_predictions(
            out / "results" / model / "predictions.jsonl")])
        assert rescored == result, model
    report = (out / "report.md").read_text(encoding="utf-8")
    for needle in ("## Findings", "## Answers side by side", "cot_accuracy.png", "transformers", "seed 42"):
        assert needle in report
    assert (out / "cot_accuracy.png").stat().st_size > 0 and (out / "language.png").stat().st_size > 0

    again = run_python(*cmd[1:-2], "--lora_target_modules", "q_proj", timeout=120)
    assert again.returncode == 2 and "other settings (training)" in only_error(again)
