"""The rank-balanced length-grouped order on real FLAN CoT lengths: every record once, each step's padded tokens
even over ranks (and far more even than transformers' order dealt round-robin), one process's padding, seeded;
and under torchrun (gloo, CPU) each rank's dataloader yields the micro-batches the order deals it."""

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from alpaca_cot import ROOT
from alpaca_cot.train.rank_order import balance_stats, balanced_order, deal_step, padded_tokens, padding_share
from alpaca_cot.train.resumable import EpochSeededLengthSampler
from conftest import free_port

MICRO, WORLD = 32, 4


@pytest.fixture(scope="module")
def cot_lengths(shared_dir, llama_tokenizer):
    """Token lengths of every formatted FLAN CoT training row, through finetune's own tokenisation."""
    from alpaca_cot.data import cot
    from alpaca_cot.data.preprocess import Prompter, tokenise

    templates, rng, records = cot.load_templates(), random.Random(0), []
    for tsv in sorted((shared_dir / "data" / "flan_cot").glob("*_train.tsv")):
        records += cot.format_dataset(tsv.name.removesuffix("_train.tsv"), cot.read_tsv(tsv, "clean"), templates, rng)
    columns = {k: [r.get(k, "") for r in records] for k in ("instruction", "input", "output")}
    train, _ = tokenise(columns, llama_tokenizer, Prompter("alpaca"), 512, False, 0, seed=0)
    return list(train["length"])


def old_order(lengths, accumulation):
    """transformers' order sized by one process's step, as finetune ran before (and runs with --balance_ranks False)."""
    return list(EpochSeededLengthSampler(lengths, MICRO * accumulation, seed=42))


def new_order(lengths, accumulation, world=WORLD, seed=42, epoch=0):
    sampler = EpochSeededLengthSampler(lengths, MICRO * accumulation, seed=seed, micro_batch_size=MICRO, world=world)
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_balanced_over_four_ranks(cot_lengths, accumulation):
    order = new_order(cot_lengths, accumulation)
    assert sorted(order) == list(range(len(cot_lengths)))  # every record exactly once
    new = balance_stats(order, cot_lengths, MICRO, WORLD, accumulation)
    old = balance_stats(old_order(cot_lengths, accumulation), cot_lengths, MICRO, WORLD, accumulation)
    one_gpu = new_order(cot_lengths, accumulation * WORLD, world=1)
    pads = {name: padding_share(o, cot_lengths, MICRO)
            for name, o in (("new", order), ("old", old_order(cot_lengths, accumulation)), ("one_gpu", one_gpu))}
    print(f"\n{len(cot_lengths)} records, world {WORLD}, micro {MICRO}, accumulation {accumulation}: "
          f"new {new}\nold {old}\npadding {pads}")
    # With one micro-batch a step, a step's 4 micro-batches can only be its consecutive ones.
    assert new["mean_max_over_min"] < (1.05 if accumulation == 1 else 1.03)
    assert new["worst_max_over_min"] < (2 if accumulation == 1 else 1.5)
    assert new["mean_max_over_min"] - 1 < (old["mean_max_over_min"] - 1) / 2  # far more even than the old order
    assert new["efficiency"] > old["efficiency"]
    assert abs(pads["new"] - pads["one_gpu"]) < 0.01
    step = MICRO * accumulation * WORLD  # each optimizer step trains the same records as on one GPU
    assert all(set(order[i:i + step]) == set(one_gpu[i:i + step]) for i in range(0, len(order), step))


def test_same_seed_and_epoch_same_order(cot_lengths):
    assert new_order(cot_lengths, 2, epoch=1) == new_order(cot_lengths, 2, epoch=1)
    assert new_order(cot_lengths, 2, epoch=1) != new_order(cot_lengths, 2, epoch=2)
    assert new_order(cot_lengths, 2, seed=1) != new_order(cot_lengths, 2, seed=2)


def test_one_process_keeps_transformers_order():
    lengths = [(i * 37) % 301 + 1 for i in range(1000)]
    for accumulation in (1, 4):
        assert new_order(lengths, accumulation, world=1) == old_order(lengths, accumulation)


def test_short_last_step():
    """A last step with fewer micro-batches than ranks x accumulation, and a short last micro-batch."""
    lengths = [5, 50, 40, 30, 20, 10, 45, 1, 2, 3]
    step = deal_step(list(range(10)), lengths, micro=2, world=4)  # 5 micro-batches: ranks 0-3, then rank 0
    assert sorted(step) == list(range(10))
    order = balanced_order(lengths, 2, 4, 2, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(10))
    odd = balanced_order(lengths[:9], 2, 4, 1, torch.Generator().manual_seed(0))
    assert sorted(odd) == list(range(9)) and len(odd) == 9


def test_deal_balances_accumulated_micro_batches():
    lengths = [100 - i for i in range(16)]  # 8 micro-batches of 2, longest first
    step = deal_step(list(range(16)), lengths, micro=2, world=4)
    batches = [step[i:i + 2] for i in range(0, 16, 2)]
    loads = [sum(padded_tokens(b, lengths) for b in batches[r::4]) for r in range(4)]
    assert max(loads) == min(loads) == 2 * 192  # 104+88 or 96+96 (lengths rounded up to 8)


RANK_SCRIPT = """
import json, sys, torch
from datasets import Dataset
from alpaca_cot.train import resumable
from alpaca_cot.train.trainer import _training_args
lengths = json.loads(sys.argv[1])
data = Dataset.from_dict({"input_ids": [[i] for i in range(len(lengths))], "length": lengths})
args = _training_args(output_dir=sys.argv[2], per_device_train_batch_size=2, gradient_accumulation_steps=2,
                      group_by_length=True, length_column_name="length", use_cpu=True, ddp_backend="gloo",
                      report_to="none", seed=7, data_seed=7, remove_unused_columns=False)
trainer = resumable.trainer_class()(model=torch.nn.Linear(1, 1), args=args, train_dataset=data,
                                    data_collator=lambda rows: [r["input_ids"][0] for r in rows])
batches = list(trainer.get_train_dataloader())
with open(f"{sys.argv[2]}/rank{args.process_index}.json", "w") as f:
    json.dump({"world": args.world_size, "batches": batches}, f)
"""


def test_each_rank_gets_its_micro_batches(tmp_path):
    """Two gloo processes: rank r's dataloader yields the order's micro-batches r, r + 2, r + 4, ..."""
    lengths = [(i * 53) % 97 + 1 for i in range(64)]
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), str(script), json.dumps(lengths), str(tmp_path)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    order = balanced_order(lengths, 2, 2, 2, torch.Generator().manual_seed(7))
    expected = [order[i:i + 2] for i in range(0, 64, 2)]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["world"] == 2 and got["batches"] == expected[rank::2]


@pytest.mark.parametrize("balance", [True, False])
def test_trainer_hook(tmp_path, balance):
    """The Trainer's sampler takes its micro-batch, accumulation and world size; balance_ranks False: the old one."""
    from datasets import Dataset

    from alpaca_cot.train import resumable
    from alpaca_cot.train.trainer import _training_args

    lengths = [(i * 7) % 50 + 1 for i in range(40)]
    data = Dataset.from_dict({"input_ids": [[1]] * 40, "length": lengths})
    args = _training_args(output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=3,
                          group_by_length=True, length_column_name="length", use_cpu=True, report_to="none",
                          seed=5, data_seed=5)
    trainer = resumable.trainer_class()(model=torch.nn.Linear(1, 1), args=args, train_dataset=data)
    trainer.balance_ranks = balance
    sampler = trainer._get_train_sampler()
    assert (sampler.batch_size, sampler.micro_batch_size, sampler.world) == (12, 4 if balance else None, 1)
    assert list(sampler) == list(EpochSeededLengthSampler(lengths, 12, seed=5))  # one process: the same order
