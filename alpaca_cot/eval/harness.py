"""Standard benchmarks through EleutherAI's lm-evaluation-harness: `scripts/evaluate.py --lm_eval gsm8k,mmlu`.

The harness loads the base model and the adapter itself (its `peft=` argument: the adapter unmerged, as
trained) and runs each task as the harness defines it. Its registry names the tasks (gsm8k, mmlu, ceval-valid,
cmmlu, ...), whose data comes from the Hugging Face hub; `--lm_eval_include DIR` adds task YAMLs of one's
own, whose data may be local files. Task names are checked before any model loads.
"""

import functools
import importlib.metadata
import importlib.util
from pathlib import Path

from alpaca_cot.cli import UserError, as_list


@functools.lru_cache(maxsize=4)
def _manager(include: str | None):
    """The harness's index of every task (seconds to build: once per process and folder)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include)


def task_manager(tasks, include: str | None):
    """The harness's task index (with the YAMLs under include), every requested task checked to be in it."""
    if importlib.util.find_spec("lm_eval") is None:
        raise UserError("--lm_eval needs lm-evaluation-harness: pip install lm-eval")
    if include is not None and not Path(include).is_dir():
        raise UserError(f"--lm_eval_include {include} is not a folder")
    import difflib

    manager = _manager(str(Path(include).resolve()) if include else None)
    known = set(manager.all_tasks)
    names = as_list(tasks)
    if not names:
        raise UserError("--lm_eval: name at least one task (gsm8k, mmlu, ceval-valid, cmmlu, ...)")
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            raise UserError(f"--lm_eval: no task {name!r} in lm-evaluation-harness"
                            + (f"; did you mean {', '.join(close)}?" if close else ""))
    return manager, names


def evaluate(base_model: str, lora_weights: str | None, names: list[str], manager, limit: int | None,
             num_fewshot: int | None, batch_size: int) -> dict:
    """{"tasks": {task: {metric: value}}, "samples": {task: n}, "versions": ...} from the harness."""
    import lm_eval
    import torch

    cuda = torch.cuda.is_available()
    model_args = {"pretrained": base_model, "dtype": "bfloat16" if cuda and torch.cuda.is_bf16_supported() else
                  "float32"}
    if lora_weights is not None:
        model_args["peft"] = str(lora_weights)
    try:
        found = lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=names, task_manager=manager,
                                        num_fewshot=num_fewshot, limit=limit, batch_size=batch_size,
                                        device="cuda" if cuda else "cpu")
    except (ConnectionError, OSError) as e:  # a task's data on the hub, with no network (or HF_HUB_OFFLINE=1); the
        # model and adapter were checked before (scripts/evaluate.py), so what fails to load here is data
        raise UserError(f"--lm_eval: a task's data could not be loaded ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); its data comes from the hub") from None
    tasks = {task: {_metric_name(metric): round(float(value), 4) for metric, value in scores.items()
                    if "," in metric and isinstance(value, (int, float)) and not isinstance(value, bool)}
             for task, scores in found["results"].items()}
    return {"tasks": tasks, "samples": {t: n["effective"] for t, n in found.get("n-samples", {}).items()},
            "num_fewshot": num_fewshot, "limit": limit, "version": importlib.metadata.version("lm_eval")}


def _metric_name(key: str) -> str:
    """The harness's "metric,filter" key: the metric alone where the filter is none, else metric/filter (gsm8k
    reports exact_match under strict-match and flexible-extract)."""
    metric, _, kind = key.partition(",")
    if kind == "none":
        return metric
    if metric.endswith("_stderr"):
        return f"{metric.removesuffix('_stderr')}/{kind}_stderr"
    return f"{metric}/{kind}"


def markdown(results: dict) -> list[str]:
    lines = [f"lm-evaluation-harness {results['version']} (few-shot: {results['num_fewshot']}, "
             f"limit: {results['limit']}):", "", "| task | metric | value | samples |", "|---|---|---:|---:|"]
    for task, scores in results["tasks"].items():
        for metric, value in scores.items():
            if not metric.endswith("_stderr"):
                stderr = scores.get(f"{metric}_stderr")
                shown = f"{value:.4f}" + (f" ± {stderr:.4f}" if isinstance(stderr, float) else "")
                lines.append(f"| {task} | {metric} | {shown} | {results['samples'].get(task, '')} |")
    return lines + [""]
