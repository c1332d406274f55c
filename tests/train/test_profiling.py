"""finetune --profile_steps: the trace summary's arithmetic, the speed window ending before the profiled
steps, and a real (CPU) run writing a trace and a summary per rank."""

import json
from types import SimpleNamespace

import pytest

from alpaca_cot.train import profiling
from conftest import small_run


def _event(name, ts, dur, cat="cpu_op"):
    return {"ph": "X", "name": name, "ts": ts, "dur": dur, "cat": cat}


def test_summary_of_a_trace():
    events = [_event(profiling.START, 0, 1, "user_annotation"), _event(profiling.END, 10_000, 1, "user_annotation"),
              _event(profiling.END, 12_000, 1, "gpu_user_annotation"),  # the device's copy: not the window's end
              _event("gemm", 1_000, 3_000, "kernel"), _event("softmax", 3_000, 2_000, "kernel"),  # overlapping
              _event("ncclDevKernel_AllReduce", 6_000, 1_000, "kernel"),
              _event("Memcpy DtoH", 9_500, 100, "gpu_memcpy"),
              _event("cudaStreamSynchronize", 4_500, 500, "cuda_runtime"),
              _event("Optimizer.step#AdamW.step", 4_800, 1_500, "user_annotation"),  # spans the 5000-6000 stall
              _event("aten::_local_scalar_dense", 7_000, 3_000), _event("cudaMemcpyAsync", 8_000, 1_000,
                                                                        "cuda_runtime"),  # innermost at 8250
              _event("gemm", 9_900, 500, "kernel")]  # runs past the window's end: clipped
    s = profiling.summarise({"traceEvents": events}, steps=2)
    assert s["window_ms"] == 10.0 and s["per_step_ms"] == 5.0
    assert s["gpu_busy_share"] == 0.52  # 1000-5000, 6000-7000, 9500-9600, 9900-10000
    assert s["gpu_idle_ms"] == 4.8
    assert (s["gpu_stalls"], s["gpu_stall_ms"]) == (3, 4.5)  # 0-1000, 5000-6000, 7000-9500; 9600-9900 is short
    assert s["nccl_ms"] == 1.0
    assert (s["host_waits"], s["host_wait_ms"]) == (1, 0.5)
    assert s["stall_causes"] == {"cudaMemcpyAsync": 2.5, "python": 1.0, "Optimizer.step#AdamW.step": 1.0}
    assert "GPU busy 52.0%" in profiling.describe(0, s)


def test_summary_of_a_cpu_trace_has_no_gpu_figures():
    marks = [_event(profiling.START, 0, 1, "user_annotation"), _event(profiling.END, 3_000, 1, "user_annotation")]
    s = profiling.summarise({"traceEvents": marks}, 3)
    assert "gpu_busy_share" not in s and s["per_step_ms"] == 1.0
    with pytest.raises(ValueError, match="markers"):
        profiling.summarise({"traceEvents": marks[:1]}, 1)


def test_speed_window_ends_where_profiling_starts():
    from alpaca_cot.train.throughput import throughput_callback

    collator = SimpleNamespace(real_tokens=0, padded_tokens=0)
    speed = throughput_callback(collator, warmup_steps=1, untimed_last=2)
    args, state = SimpleNamespace(eval_strategy="no"), SimpleNamespace(global_step=0, max_steps=5)
    speed.on_train_begin(args, state, None)
    for step in range(1, 6):
        collator.real_tokens += 90 if step <= 3 else 1  # the profiled steps 4 and 5 must not count
        collator.padded_tokens += 100
        state.global_step = step
        speed.on_step_end(args, state, None)
    speed.on_train_end(args, state, None)
    m = speed.metrics()
    assert m["measured_steps"] == 2 and m["padding_share"] == 0.1


def test_finetune_profiles_its_last_steps(tmp_path, tiny_llama, train_file, capsys):
    out = tmp_path / "run"
    small_run(tiny_llama, train_file, out, max_steps=6, profile_steps=2)
    summary = json.loads((out / "profile" / "rank0-summary.json").read_text())
    assert summary["steps"] == 2 and summary["window_ms"] > 0
    trace = json.loads((out / "profile" / "rank0.json").read_text())
    assert any(e.get("name") == "aten::mm" for e in trace["traceEvents"])  # the model's work was recorded
    assert "profile rank 0: 2 steps" in capsys.readouterr().out
    speed = json.loads((out / "train_summary.json").read_text())
    assert speed["measured_steps"] == 3  # 6 steps less 1 of warm-up less the 2 profiled


def test_negative_profile_steps_is_refused():
    import inspect

    from alpaca_cot.train.finetune import check_finetune_flags
    from alpaca_cot.cli import UserError
    from alpaca_cot.train.finetune import finetune

    flags = {name: p.default for name, p in inspect.signature(finetune).parameters.items()}
    check_finetune_flags(**flags)
    with pytest.raises(UserError, match=r"--profile_steps must be an integer >= 0, got -1"):
        check_finetune_flags(**{**flags, "profile_steps": -1})
