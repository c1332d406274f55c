"""Launchers on one host acting as two nodes (gloo, CPU): the seed's multi-node command trains and saves one
adapter, with torchrun starting one node and torch.distributed.launch the other; and accelerate launch."""

import json
import os
import subprocess
import sys

from alpaca_cot import ROOT
from conftest import free_port

# A launcher that starts one process sets no OMP_NUM_THREADS, so accelerate gives each node's process every
# core: two processes of two threads each on a 2-core machine, waiting on each other.
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")


def test_two_nodes_train_one_adapter(tmp_path, tiny_llama, train_file):
    """Node 0 started by torchrun, node 1 by torch.distributed.launch, which also passes --local-rank=0 on the
    command line: one job, so each launcher's way of starting finetune.py is checked in one launch."""
    port, out = free_port(), tmp_path / "adapter"
    flags = ["finetune.py", "--base_model", str(tiny_llama), "--data", str(train_file), "--quantization", "none",
             "--batch_size", "8", "--micro_batch_size", "2", "--max_steps", "3", "--val_set_size", "0",
             "--cutoff_len", "128", "--report_to", "none", "--save_steps", "1000", "--output_dir", str(out)]
    launchers = ("torch.distributed.run", "torch.distributed.launch")
    nodes = [subprocess.Popen([sys.executable, "-m", launcher, "--nproc_per_node", "1", "--nnodes", "2",
                               "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
                               *flags], cwd=ROOT, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for rank, launcher in enumerate(launchers)]
    results = [node.communicate(timeout=600) for node in nodes]
    for node, (stdout, stderr) in zip(nodes, results):
        assert node.returncode == 0, stderr[-3000:]
    first = results[0][0]
    config = json.loads(first[first.index("{"):first.index("}") + 1])
    assert config["world_size"] == 2 and config["gradient_accumulation_steps"] == 2
    assert "alpaca-cot finetune" not in results[1][0]  # only global rank 0 prints and saves
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "train_summary.json").read_text())["train_loss"] > 0


def test_accelerate_launch_trains_one_adapter(tmp_path, tiny_llama, train_file):
    """`accelerate launch --multi_gpu --num_processes 2` (the README's launcher for --fsdp) starts two ranks
    (gloo on a CPU) that train together and save one adapter."""
    out = tmp_path / "adapter"
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "--main_process_port", str(free_port()), "finetune.py", "--base_model", str(tiny_llama),
                           "--data", str(train_file), "--quantization", "none", "--batch_size", "8",
                           "--micro_batch_size", "2", "--max_steps", "2", "--val_set_size", "0", "--cutoff_len", "128",
                           "--report_to", "none", "--save_steps", "1000", "--output_dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.index("}") + 1])
    assert config["world_size"] == 2 and config["gradient_accumulation_steps"] == 2
    assert proc.stdout.count("alpaca-cot finetune") == 1
    assert (out / "adapter_model.safetensors").is_file()
