"""Counting the tokens a run trains on and how fast: real (unpadded) and padded tokens per second.

The collator counts each micro-batch's tokens on the CPU as it builds it; the callback turns the
counts into a steady-state speed, summed over the processes of a distributed run.
"""

import math
import time

import torch

from alpaca_cot.model import models


class CountingCollator:
    """Builds each micro-batch and counts its real and padded tokens on the CPU (no GPU sync).

    Padded: DataCollatorForSeq2Seq, right-padded to a multiple of 8. Packed (padding-free):
    transformers' DataCollatorWithFlattening puts the records side by side in one row with position
    ids restarting at each record; with no attention mask and no KV cache, transformers then keeps
    attention inside each record, and the first label of each record is masked so that no record
    learns to predict the next one.
    """

    def __init__(self, tokenizer, *, packing=False, collate=None, pad_to: int | None = None):
        from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

        if collate is None and packing:
            collate = DataCollatorWithFlattening(return_tensors="pt")
        # pad_to: every record padded to that length, as the 2023 recipe's tokenizer(padding="max_length") did.
        padding = dict(padding="max_length", max_length=pad_to) if pad_to else dict(padding=True, pad_to_multiple_of=8)
        self.collate = collate or DataCollatorForSeq2Seq(tokenizer, return_tensors="pt", label_pad_token_id=-100,
                                                         **padding)
        self.real_tokens = self.padded_tokens = 0

    def __call__(self, features):
        batch = self.collate(features)
        mask = batch.get("attention_mask")
        self.real_tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        self.padded_tokens += batch["input_ids"].numel()
        return batch


def all_ranks_sum(values: list[int]) -> list[int]:
    """Sum counts over the processes of a distributed run (each rank collates its own batches)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    device = f"cuda:{models.local_rank()}" if torch.distributed.get_backend() == "nccl" else "cpu"
    total = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return [int(v) for v in total.tolist()]


# Untimed micro-batches per process before the speed is measured. Counted in micro-batches, not optimizer
# steps, so that every GPU count warms up on the same work: a run's first batches are slower, and with more
# GPUs each step holds fewer micro-batches per GPU.
WARMUP_MICRO_BATCHES = 20


def untimed_steps(accumulation: int, run_steps: int) -> int:
    """Optimizer steps left out of the speed: WARMUP_MICRO_BATCHES per process, at most a fifth of the
    run's run_steps optimizer steps, and at least one."""
    return max(1, min(math.ceil(WARMUP_MICRO_BATCHES / accumulation), run_steps // 5))


def gpu_sync():
    """Wait for the GPU's queued work, where there is a GPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def throughput_callback(collator: CountingCollator, warmup_steps: int = None, accumulation: int = 1,
                        untimed_last: int = 0):
    """Steady-state training speed: tokens (all processes') and seconds (rank 0's) from the end of step
    `warmup_steps` to the end, or to `untimed_last` steps before it (the profiled ones), less the time and
    tokens of evaluations in between. warmup_steps None: untimed_steps of the steps this process start
    runs, with `accumulation` micro-batches per step."""
    from transformers import TrainerCallback

    def sync(gpu=True):
        if gpu:
            gpu_sync()
        return time.perf_counter(), collator.real_tokens, collator.padded_tokens

    class Throughput(TrainerCallback):
        start = last = end = window = None
        steps = 0
        evaluation = (0.0, 0, 0)  # seconds and tokens spent evaluating inside the window, left out

        def on_train_begin(self, args, state, control, **kw):
            self.first_step = state.global_step  # later than 0 when resuming
            self.warmup = warmup_steps if warmup_steps is not None else untimed_steps(
                accumulation, state.max_steps - state.global_step)
            self.stop = state.max_steps - untimed_last
            if torch.cuda.is_available():  # training's peak, not loading's (quantizing on load peaks higher)
                torch.cuda.reset_peak_memory_stats()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == self.first_step + self.warmup:
                self.start = sync()
            if state.global_step == self.stop and self.start is not None and untimed_last:
                self.end = sync()
            # No GPU sync here: that would stall every step; the error is the step's unfinished tail.
            timing = self.start is not None and self.end is None
            self.last = sync(gpu=False) if timing and args.eval_strategy != "no" else None

        def on_evaluate(self, args, state, control, **kw):
            if self.last is not None:  # evaluation runs right after a step's end
                now = sync()
                self.evaluation = tuple(e + n - l for e, n, l in zip(self.evaluation, now, self.last))

        def on_train_end(self, args, state, control, **kw):
            end = self.end or sync()
            self.steps = min(state.global_step, self.stop) - self.first_step - self.warmup
            if self.start is not None and self.steps > 0:
                seconds, real, padded = (e - s - x for e, s, x in zip(end, self.start, self.evaluation))
                self.window = (seconds, *all_ranks_sum([real, padded]))

        def metrics(self) -> dict:
            if self.window is None or self.window[0] <= 0 or self.window[2] <= 0:
                return {}  # no step measured (a short or resumed run)
            seconds, real, padded = self.window
            out = {"real_tokens_per_s": round(real / seconds, 1), "padded_tokens_per_s": round(padded / seconds, 1),
                   "padding_share": round(1 - real / padded, 4), "measured_steps": self.steps}
            if torch.cuda.is_available():
                out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            return out

    return Throughput()
