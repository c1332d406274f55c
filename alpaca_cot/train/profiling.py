"""finetune --profile_steps N: record the run's last N optimizer steps with torch.profiler and say where a
step's time goes: how much of it the GPU ran kernels (NCCL's included), how long it sat idle and what
the host ran meanwhile, how long the host waited for the GPU, and how long each rank spent in NCCL
(on the faster ranks, mostly waiting for the slowest).

Each rank writes profile/rank{R}.json (a Chrome trace: chrome://tracing or https://ui.perfetto.dev) and
profile/rank{R}-summary.json, read from that trace. The speed in train_summary.json stops before the
profiled steps, so profiling does not slow the figure it sits beside.
"""

import json
import os
from pathlib import Path

import torch

from alpaca_cot.train.throughput import gpu_sync

START, END = "alpaca_cot.profile.start", "alpaca_cot.profile.end"
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
HOST_CATEGORIES = ("cpu_op", "user_annotation", "cuda_runtime", "cuda_driver")
# Host calls that block until the GPU catches up (a tensor's .item() is a copy then a stream sync).
HOST_WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
IDLE_GAP_US = 1000  # device gaps at least this long are counted apart: a stall, not a launch's latency


def _union_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _gaps(intervals: list[tuple[float, float]], start: float, end: float) -> list[tuple[float, float]]:
    """The idle stretches between the union's pieces inside [start, end)."""
    gaps, reach = [], start
    for a, b in sorted(intervals):
        if a > reach:
            gaps.append((reach, a))
        reach = max(reach, b)
    if end > reach:
        gaps.append((reach, end))
    return gaps


def _stall_causes(stalls: list[tuple[float, float]], host: list[dict], top: int = 5) -> dict:
    """ms of device stalls by the innermost host event running at each stall's middle ("python" when the
    host ran no recorded op then: the Trainer's own Python, collation): what the host did while the GPU waited."""
    causes = {}
    for a, b in stalls:
        mid = (a + b) / 2
        around = [e for e in host if e["ts"] <= mid < e["ts"] + e.get("dur", 0)]
        name = min(around, key=lambda e: e.get("dur", 0))["name"] if around else "python"
        causes[name] = causes.get(name, 0) + (b - a) / 1e3
    ranked = sorted(causes.items(), key=lambda kv: -kv[1])[:top]
    return {name: round(ms, 2) for name, ms in ranked}


def summarise(trace: dict, steps: int) -> dict:
    """Where the window between the START and END markers went, from a Chrome trace's events (times in us)."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    # Host-side only: on a GPU the trace repeats each annotation on the device timeline (gpu_user_annotation).
    marks = {e["name"]: e["ts"] for e in events if e["name"] in (START, END) and e.get("cat") == "user_annotation"}
    if set(marks) != {START, END}:
        raise ValueError("the trace lacks the profile window's start and end markers")
    start, end = marks[START], marks[END]
    window = [(max(e["ts"], start), min(e["ts"] + e.get("dur", 0), end)) for e in events]
    device = [(a, b) for (a, b), e in zip(window, events) if e.get("cat") in DEVICE_CATEGORIES and b > a]
    nccl = [(a, b) for (a, b), e in zip(window, events)
            if e.get("cat") == "kernel" and "nccl" in e["name"].lower() and b > a]
    waits = [(a, b) for (a, b), e in zip(window, events) if e["name"] in HOST_WAITS and b > a]
    span = end - start
    out = {"steps": steps, "window_ms": round(span / 1e3, 2), "per_step_ms": round(span / 1e3 / steps, 2),
           "host_waits": len(waits), "host_wait_ms": round(_union_us(waits) / 1e3, 2)}
    if device:
        busy = _union_us(device)
        stalls = [(a, b) for a, b in _gaps(device, start, end) if b - a >= IDLE_GAP_US]
        host = [e for e in events if e.get("cat") in HOST_CATEGORIES and e["name"] not in (START, END)]
        out.update(gpu_busy_share=round(busy / span, 4), gpu_idle_ms=round((span - busy) / 1e3, 2),
                   gpu_stalls=len(stalls), gpu_stall_ms=round(sum(b - a for a, b in stalls) / 1e3, 2),
                   stall_causes=_stall_causes(stalls, host), nccl_ms=round(_union_us(nccl) / 1e3, 2))
    return out


def describe(rank: int, s: dict) -> str:
    """One log line of a rank's summary."""
    line = f"profile rank {rank}: {s['steps']} steps, {s['per_step_ms']} ms a step"
    if "gpu_busy_share" in s:
        line += (f"; GPU busy {s['gpu_busy_share']:.1%}, idle {s['gpu_idle_ms']} ms ({s['gpu_stalls']} stalls of "
                 f"1 ms or more: {s['gpu_stall_ms']} ms); NCCL {s['nccl_ms']} ms")
        if s["stall_causes"]:
            line += "; stalled during " + ", ".join(f"{name} {ms} ms" for name, ms in s["stall_causes"].items())
    return line + f"; host waited {s['host_waits']} times, {s['host_wait_ms']} ms"


def profiler_callback(steps: int, folder: Path, log=print):
    """A TrainerCallback recording the last `steps` optimizer steps of the run on this rank."""
    from transformers import TrainerCallback

    rank = int(os.environ.get("RANK", 0))  # global: two nodes' local ranks may share an output folder

    class Profile(TrainerCallback):
        profiler = first = None
        done = False

        def on_train_begin(self, args, state, control, **kw):
            self.first = max(state.global_step, state.max_steps - steps)
            if self.first == state.global_step:
                self.start()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == self.first:
                self.start()
            elif self.profiler is not None and state.global_step == state.max_steps:
                self.stop(state.global_step - self.first)  # before the last step's logging and saving

        def on_train_end(self, args, state, control, **kw):
            if self.profiler is None and not self.done:
                log(f"profile rank {rank}: no step was profiled (the run ended at step {state.global_step}, "
                    f"before step {self.first})")

        def start(self):
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            gpu_sync()
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.start()
            with torch.profiler.record_function(START):
                pass

        def stop(self, recorded: int):
            gpu_sync()
            with torch.profiler.record_function(END):
                pass
            self.profiler.stop()
            folder.mkdir(parents=True, exist_ok=True)
            trace = folder / f"rank{rank}.json"
            self.profiler.export_chrome_trace(str(trace))
            self.profiler, self.done = None, True
            summary = summarise(json.loads(trace.read_text()), recorded)
            (folder / f"rank{rank}-summary.json").write_text(json.dumps(summary, indent=1) + "\n")
            print(describe(rank, summary), flush=True)

    return Profile()
