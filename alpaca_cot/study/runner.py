"""Running the study's cells: training and evaluating each (mix, seed), one after another in this process
or in several worker processes at once; each cell is skipped once its output exists.

Every cell runs transformers' own kernels (no Liger): Liger patches LLaMA for the whole process, so a
model evaluated after a training in the same process would otherwise run other kernels than one that was not.
"""

import json
import os
import subprocess
import time
from pathlib import Path

from alpaca_cot import ROOT

from alpaca_cot.eval import evaluation
from alpaca_cot.cli import UserError
from alpaca_cot.io import write_json_atomic
from alpaca_cot.study.grid import EVAL_TASKS, cells, done, model_name


def train_cell(out: Path, mix: str, seed: int, base_model: str, config: dict) -> dict:
    """Trains one mix with one seed (resuming from its last checkpoint if a run was cut off)."""
    from alpaca_cot.train.finetune import finetune

    folder = out / "adapters" / model_name(mix, seed)
    files = ",".join(str(out / "data" / f"seed-{seed}" / f"{name}.json") for name in mix.split("-"))
    resume = "auto" if any(folder.glob("checkpoint-*")) else None
    finetune(base_model=base_model, data=files, output_dir=str(folder), overwrite=resume is None,
             resume_from_checkpoint=resume, report_to="none", fused_kernels=False, seed=seed, **config["training"])
    return json.loads((folder / "train_summary.json").read_text())


def eval_cell(out: Path, mix: str, seed, base_model: str, config: dict) -> dict:
    items = [i for task in EVAL_TASKS for i in evaluation.load_items(out / "eval" / f"{task}.jsonl", task)]
    shots_file = out / "eval" / "shots.json"
    items = evaluation.with_shots(items, json.loads(shots_file.read_text()) if shots_file.is_file() else {})
    name = model_name(mix, seed)
    adapter = None if mix == "base" else str(out / "adapters" / name)
    return evaluation.evaluate(base_model, adapter, items, out / "results" / name, name, config["eval_batch_size"],
                               config["max_new_tokens"], config["training"]["quantization"])


def run_cell(out: Path, step: str, mix: str, seed, base_model: str, config: dict, log_file=None) -> float:
    """One cell, timed; in a worker process its output goes to log_file."""
    import contextlib
    import gc

    import torch

    started = time.time()
    with contextlib.ExitStack() as stack:
        if log_file is not None:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            f = stack.enter_context(open(log_file, "a", encoding="utf-8"))
            stack.enter_context(contextlib.redirect_stdout(f))
            stack.enter_context(contextlib.redirect_stderr(f))
        try:
            (train_cell if step == "train" else eval_cell)(out, mix, seed, base_model, config)
        except BaseException:
            if log_file is not None:  # the parent reports it in one line; the traceback belongs in the cell's log
                import traceback

                traceback.print_exc()
            raise
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return round(time.time() - started, 1)


def environment(base_model_path: str) -> dict:
    """The machine and versions that run the cells, recorded for the report."""
    import platform

    import peft
    import torch
    import transformers

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()})"
    # A copy of the tree whose .git is missing or stale (a lent GPU machine's) names its commit in ALPACA_COT_COMMIT.
    commit = os.environ.get("ALPACA_COT_COMMIT") or subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"commit": commit or "unknown", "versions": f"python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, peft {peft.__version__}", "device": device,
            "base_model_path": base_model_path, "kernels": "transformers' own in every cell (no Liger)"}


def run_cells(out: Path, base_model: str, config: dict, workers: int = 1, log=print):
    """Every train and evaluate cell not yet done, timing each into out/timings.json; an evaluation waits for
    its adapter. workers > 1 runs that many cells at once, each in a fresh process."""
    from tqdm import tqdm

    todo = [c for c in cells(config) if not done(out, *c)]
    if todo:
        write_json_atomic(environment(base_model), out / "environment.json")
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    for cell in cells(config):
        if cell not in todo:
            log(f"skip {cell[0]} {model_name(*cell[1:])}: done")
    bar = tqdm(total=len(todo), desc="study", unit="cell")

    def finished(cell, seconds):
        timings[f"{cell[0]} {model_name(*cell[1:])}"] = seconds
        write_json_atomic(timings, timings_path)
        bar.update(1)

    try:
        if workers <= 1:
            for cell in todo:
                log(f"== {cell[0]} {model_name(*cell[1:])}")
                finished(cell, run_cell(out, *cell, base_model, config))
        else:
            _run_parallel(out, todo, base_model, config, workers, finished, log)
    finally:
        bar.close()  # before any error line, which then starts a line of its own


def _run_parallel(out, todo, base_model, config, workers, finished, log):
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    def ready(cell):  # an evaluation needs its adapter
        return cell[0] == "train" or cell[1] == "base" or done(out, "train", cell[1], cell[2])

    waiting, running, failed = list(todo), {}, []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        while waiting or running:
            # After a failure no new cell starts; those running finish, so that no finished work is lost.
            for cell in [c for c in waiting if ready(c) and not failed][:max(0, workers - len(running))]:
                waiting.remove(cell)
                log_file = out / "logs" / f"{cell[0]}-{model_name(*cell[1:]).replace('/', '-')}.log"
                log(f"== {cell[0]} {model_name(*cell[1:])} (log: {log_file})")
                running[pool.submit(run_cell, out, *cell, base_model, config, log_file)] = cell
            if not running:
                if failed:
                    break
                raise RuntimeError(f"cells wait for adapters that no cell trains: {waiting}")
            finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished_now:
                cell = running.pop(future)
                if future.exception() is None:
                    finished(cell, future.result())
                else:
                    failed.append((cell, future.exception()))
    if failed:
        (step, mix, seed), error = failed[0]
        first = (str(error).splitlines() or [""])[0]
        raise UserError(f"{step} {model_name(mix, seed)} failed ({type(error).__name__}: {first}); "
                        f"see its log in {out / 'logs'}. Run the study again to continue"
                        + (" (with fewer --workers if the GPU ran out of memory)" if "memory" in str(error) else ""))
