"""scripts/study.py end to end on a tiny model: every cell, a kill and a resume, the report (CPU)."""

import json
import os
import runpy
import signal
import subprocess
import sys
import time

from alpaca_cot import ROOT

from alpaca_cot.data import dedup

from alpaca_cot.eval import evaluation
from conftest import only_error, run_python


def study_cmd(tiny_llama, shared_dir, out):
    data = shared_dir / "data"
    return [sys.executable, str(ROOT / "scripts" / "study.py"), "--base_model", tiny_llama, "--out", out,
            "--alpaca", data / "alpaca_cleaned.sample.json", "--belle", data / "belle_cn.sample.json",
            "--cot_src", data / "flan_cot", "--belle_eval", data / "belle_eval" / "eval_set.json",
            "--records_per_source", "8", "--cot_eval_per_dataset", "2", "--chinese_eval", "3",
            "--belle_eval_records", "3", "--english_eval", "3", "--max_new_tokens", "6", "--num_epochs", "1",
            "--batch_size", "8", "--micro_batch_size", "8", "--cutoff_len", "128", "--seeds", "1,2",
            "--mixes", "alpaca,alpaca-cot", "--lora_target_modules", "q_proj,v_proj"]


def test_study_runs_every_cell_resumes_after_a_kill_and_reports(tiny_llama, shared_dir, tmp_path, monkeypatch,
                                                                capsys):
    out = tmp_path / "study"
    cmd = [str(c) for c in study_cmd(tiny_llama, shared_dir, out)]
    # Two worker processes train alpaca's two seeds at once; the study is killed once one has finished.
    first = subprocess.Popen(cmd + ["--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 300
    while not any((out / "adapters" / "alpaca" / s / "train_summary.json").exists() for s in ("seed-1", "seed-2")):
        assert first.poll() is None and time.time() < deadline, "the study stopped before its first cell was done"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # kill -9 the study and its workers, mid-study
    first.wait()
    assert not (out / "report.md").exists()
    assert list((out / "logs").glob("train-alpaca-seed-*.log")), "each worker's cell logs to its own file"

    # The same command again (one process), run as its own process would run it but in this one: torch and
    # transformers, already imported here, are not started a second time.
    monkeypatch.setattr(sys, "argv", cmd[1:])
    capsys.readouterr()
    runpy.run_path(cmd[1], run_name="__main__")
    second = capsys.readouterr().out
    assert "train alpaca/seed-" in second and ": done" in second
    assert "== train alpaca-cot/seed-2" in second and "== evaluate base" in second

    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["train_records"] == {"seed-1": {"alpaca": 8, "belle": 8, "cot": 8},
                                         "seed-2": {"alpaca": 8, "belle": 8, "cot": 8}}
    draws = {s: json.loads((out / "data" / s / "alpaca.json").read_text()) for s in ("seed-1", "seed-2")}
    assert draws["seed-1"] != draws["seed-2"], "each training seed draws its own records"
    train = [dedup.prompt_key(r) for s in ("seed-1", "seed-2") for name in ("alpaca", "belle", "cot")
             for r in json.loads((out / "data" / s / f"{name}.json").read_text(encoding="utf-8"))]
    for task in evaluation.TASKS:
        for item in evaluation.load_items(out / "eval" / f"{task}.jsonl", task):
            assert not any(dedup.prompt_key(item) in key for key in train), item["instruction"]

    summary = json.loads((out / "summary.json").read_text())
    models = {"base", "alpaca/seed-1", "alpaca/seed-2", "alpaca-cot/seed-1", "alpaca-cot/seed-2"}
    for model in models:
        rows = evaluation.read_predictions(evaluation.predictions_file(out / "results" / model))
        assert all(isinstance(r["finished"], bool) and r["output_tokens"] >= 0 for r in rows)
        rescored = evaluation.summarize([evaluation.score_row(r) for r in rows])
        assert json.loads((out / "results" / model / "summary.json").read_text()) == rescored, model
    primary = [c for c in summary["results"]["comparisons"] if c["family"] == "primary"]
    assert [c["label"] for c in primary] == ["CoT data: FLAN CoT accuracy", "CoT data: gain from the CoT trigger"]
    assert all(c["p_holm"] >= c["p"] and len(c["per_seed"]) == 2 for c in primary)
    assert set(summary["results"]["mixes"]) == {"base", "alpaca", "alpaca-cot"}
    report = (out / "report.md").read_text(encoding="utf-8")
    for needle in ("## Primary comparisons", "Holm p", "uniform chance", "majority chance", "## Answers side by side",
                   "with vs without CoT data", "cot_accuracy.png", "comparisons.png", "transformers", "seeds [1, 2]",
                   "How answers were scored", "GPU-hours"):
        assert needle in report, needle
    assert all((out / name).stat().st_size > 0 for name in ("cot_accuracy.png", "language.png", "comparisons.png"))

    again = run_python(*cmd[1:-2], "--lora_target_modules", "q_proj", timeout=120)
    assert again.returncode == 2 and "other settings (training)" in only_error(again)


def test_a_failing_cell_lets_the_running_ones_finish_and_fails_in_one_line(tiny_llama, shared_dir, tmp_path):
    """With workers, a cell that fails (here: a cutoff shorter than the prompt template) stops new cells from
    starting; the base model's evaluation, already running beside it, still finishes and is kept."""
    cmd = [str(c) for c in study_cmd(tiny_llama, shared_dir, tmp_path / "study")]
    cmd[cmd.index("--cutoff_len") + 1] = "8"
    cmd[cmd.index("--seeds") + 1], cmd[cmd.index("--mixes") + 1] = "1", "alpaca"
    r = run_python(*cmd[1:], "--workers", "2", timeout=300)
    assert r.returncode == 2
    assert only_error(r).startswith("error: train alpaca/seed-1 failed (UserError: --cutoff_len 8 is smaller")
    assert (tmp_path / "study" / "results" / "base" / "summary.json").is_file()
    assert not (tmp_path / "study" / "report.md").exists()
