"""scripts/benchmark.py's multi-GPU mode on a CPU: --gpus checked, the torchrun command, per-GPU efficiency."""

import importlib.util
import subprocess
import sys

import pytest
import torch

from alpaca_cot import ROOT
from alpaca_cot.cli import UserError

spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def test_gpu_counts_are_checked():
    assert benchmark.gpu_counts("1,2,4", 4) == [1, 2, 4]
    assert benchmark.gpu_counts((1, 2), 2) == [1, 2]  # the command line hands 1,2 over as a tuple
    for bad in ("1,8", "0", "two", ""):
        with pytest.raises(UserError, match="--gpus"):
            benchmark.gpu_counts(bad, 4)


def test_global_batch_and_steps_are_checked_before_the_model_is_built():
    benchmark.check_scaling(["none:32", "none:32:unbalanced"], [1, 2, 4], 128, 30)
    with pytest.raises(UserError, match="--global_batch 96 is not a multiple of none:32's micro-batch 32 x 2 GPUs"):
        benchmark.check_scaling(["none:32"], [1, 2, 4], 96, 30)
    with pytest.raises(UserError, match="--scaling_steps 3 is too few"):
        benchmark.check_scaling(["none:32"], [1, 2, 4], 128, 3)


def test_every_gpu_count_times_the_same_micro_batches_per_gpu():
    """A short window understates speed (a sequence length's first batches run slower), and on more GPUs each
    step holds fewer micro-batches per GPU: N GPUs run N times the steps, untimed and timed, of one GPU."""
    from alpaca_cot.train.throughput import untimed_steps

    per_gpu = set()
    for n in (1, 2, 4):
        accumulation = 128 // (32 * n)
        steps = benchmark.run_steps(30, 128, 32, n)
        warm = untimed_steps(accumulation, steps)  # what finetune's speed callback leaves out
        per_gpu.add((warm * accumulation, (steps - warm) * accumulation))
    assert per_gpu == {(20, 120)}


def test_scaling_command(tmp_path):
    args = benchmark.finetune_command("none:32:unbalanced", tmp_path / "m", tmp_path / "d.json", tmp_path / "r", 45,
                                      128)
    assert args[1] == "finetune.py" and args[args.index("--batch_size") + 1] == "128"
    assert args[args.index("--micro_batch_size") + 1] == "32" and args[args.index("--max_steps") + 1] == "45"
    assert args[args.index("--balance_ranks") + 1] == "False"
    one, env = benchmark.scaling_command(args, 1)
    assert one == args and env == {"CUDA_VISIBLE_DEVICES": "0"}
    four, env = benchmark.scaling_command(args, 4, visible="3,5,6,7,2")
    assert four[:7] == [args[0], "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "finetune.py"]
    assert four[7:] == args[2:] and env == {"CUDA_VISIBLE_DEVICES": "3,5,6,7"}
    assert "--balance_ranks" not in benchmark.finetune_command("none", *[tmp_path] * 3, 45)
    synchronous = benchmark.finetune_command("none:nooverlap", *[tmp_path] * 3, 45)
    assert synchronous[synchronous.index("--overlap_steps") + 1] == "False" and "--overlap_steps" not in args
    assert benchmark.baseline("none:nooverlap") == "none:nooverlap"  # its own 1-GPU run, not the overlapped one


def test_efficiency_against_one_gpu(capsys):
    runs = {"none": {"1": {"real_tokens_per_s": 100.0}, "4": {"real_tokens_per_s": 360.0}},
            "none:unbalanced": {"2": {"real_tokens_per_s": 150.0}, "4": None}}
    benchmark.scaling_efficiency(runs)
    assert runs["none"]["1"]["per_gpu_efficiency"] == 1 and runs["none"]["4"]["per_gpu_efficiency"] == 0.9
    assert runs["none:unbalanced"]["2"]["per_gpu_efficiency"] == 0.75  # against none's 1-GPU run
    for m in [*runs["none"].values(), runs["none:unbalanced"]["2"]]:
        m.update(padding_share=0.03, peak_gpu_gib=70.0, train_steps_per_second=0.5)
    benchmark.print_scaling({"card": "GPU", "shape": "7b", "scaling": {"global_batch": 128, "step_overhead_ms": 1.5,
                                                                       "runs": runs}})
    table = capsys.readouterr().out
    assert "90.0%" in table and "failed" in table


def test_step_overhead_runs_on_cpu(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 64, "num_hidden_layers": 2}')
    assert benchmark.step_overhead_ms(tmp_path, iters=3, device="cpu") > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU this would run the benchmark")
def test_refuses_without_cuda():
    proc = subprocess.run([sys.executable, "scripts/benchmark.py", "--gpus", "1,2", "--recipes", "none"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "needs a CUDA GPU" in proc.stderr
