"""Micro-batches of equal cost on real FLAN CoT lengths: every record once, each step's padded tokens even over
ranks (far more even than transformers' order cut into fixed micro-batches dealt round-robin), the same
micro-batches on any number of ranks, no larger micro-batch than fixed-size ones, seeded; and under torchrun
(gloo, CPU) each rank's dataloader yields the micro-batches its sampler gives it."""

import json
import os
import subprocess
import sys

import pytest
import torch

from alpaca_cot import ROOT
from alpaca_cot.rank_order import balance_stats, padded_tokens, padding_share, rank_micro_batches
from alpaca_cot.resumable import EpochSeededLengthSampler
from conftest import free_port

MICRO, WORLD = 32, 4


@pytest.fixture(scope="module")
def cot_lengths(shared_dir, llama_tokenizer):
    """Token lengths of every formatted FLAN CoT training row, through finetune's own tokenisation."""
    import random

    from alpaca_cot import cot
    from alpaca_cot.preprocess import Prompter, tokenise

    templates, rng, records = cot.load_templates(), random.Random(0), []
    for tsv in sorted((shared_dir / "data" / "flan_cot").glob("*_train.tsv")):
        records += cot.format_dataset(tsv.name.removesuffix("_train.tsv"), cot.read_tsv(tsv, "clean"), templates, rng)
    columns = {k: [r.get(k, "") for r in records] for k in ("instruction", "input", "output")}
    train, _ = tokenise(columns, llama_tokenizer, Prompter("alpaca"), 512, False, 0, seed=0)
    return list(train["length"])


def fixed_micro_batches(lengths, accumulation, world=WORLD, seed=42):
    """transformers' order sized by one process's step, cut into fixed micro-batches that accelerate deals
    round-robin: what finetune runs with --balance_ranks False."""
    order = list(EpochSeededLengthSampler(lengths, MICRO * accumulation, seed=seed))
    batches = [order[i:i + MICRO] for i in range(0, len(order), MICRO)]
    return [batches[rank::world] for rank in range(world)]


def steps(ranks, accumulation):
    """Each full step's micro-batches over all ranks, as sets of records."""
    n = min(len(r) for r in ranks) // accumulation
    return [sorted(sorted(b) for r in ranks for b in r[s * accumulation:(s + 1) * accumulation]) for s in range(n)]


@pytest.mark.parametrize("accumulation", [1, 2])
def test_balanced_over_four_ranks(cot_lengths, accumulation):
    global_batch = MICRO * accumulation * WORLD
    ranks = rank_micro_batches(cot_lengths, global_batch, WORLD, accumulation, seed=42)
    assert sorted(i for r in ranks for b in r for i in b) == list(range(len(cot_lengths)))  # every record once
    new = balance_stats(ranks, cot_lengths, accumulation)
    fixed = fixed_micro_batches(cot_lengths, accumulation)
    old = balance_stats(fixed, cot_lengths, accumulation)
    pads = {"new": padding_share([b for r in ranks for b in r], cot_lengths),
            "old": padding_share([b for r in fixed for b in r], cot_lengths)}
    print(f"\n{len(cot_lengths)} records, world {WORLD}, micro {MICRO}, accumulation {accumulation}: "
          f"new {new}\nold {old}\npadding {pads}")
    assert new["mean_max_over_min"] < 1.03 and new["efficiency"] > 0.985
    assert new["mean_max_over_min"] - 1 < (old["mean_max_over_min"] - 1) / 2  # far more even than the old order
    assert new["largest_micro_batch"] <= old["largest_micro_batch"]  # no more memory than fixed micro-batches
    assert pads["new"] < pads["old"] + 0.01


def test_same_micro_batches_on_any_number_of_ranks(cot_lengths):
    """At one global batch and micro-batch size, 1, 2 and 4 ranks train the same micro-batches in each step."""
    one = steps(rank_micro_batches(cot_lengths, 128, 1, 4, seed=3), 4)
    assert one == steps(rank_micro_batches(cot_lengths, 128, 2, 2, seed=3), 2)
    assert one == steps(rank_micro_batches(cot_lengths, 128, 4, 1, seed=3), 1)
    sizes = {len(b) for s in one for b in s}
    assert len(sizes) > 1 and sum(len(b) for b in one[0]) == 128  # sizes vary; each step holds the global batch


def test_same_seed_and_epoch_same_order(cot_lengths):
    def order(seed=42, epoch=0):
        return rank_micro_batches(cot_lengths, 64, 2, 1, seed=seed, epoch=epoch)

    assert order(epoch=1) == order(epoch=1)
    assert order(epoch=1) != order(epoch=2)
    assert order(seed=1) != order(seed=2)


def test_short_last_step():
    """A last step of fewer records than ranks x accumulation: every rank still gets a micro-batch (records
    repeated from the epoch's start, as torch's DistributedSampler pads), and every record is trained."""
    lengths = [5, 50, 40, 30, 20, 10, 45, 1, 2, 3]
    ranks = rank_micro_batches(lengths, 8, 4, 1, seed=0)  # one full step, then 2 records for 4 ranks
    assert all(len(r) == 2 for r in ranks)
    trained = [i for r in ranks for b in r for i in b]
    assert set(trained) == set(range(10)) and len(trained) == 12
    assert padded_tokens([1, 6], lengths) == 2 * 56  # 50 and 45, padded to 56


RANK_SCRIPT = """
import json, sys, torch
from datasets import Dataset
from alpaca_cot import resumable
from alpaca_cot.trainer import _training_args
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
    """Two gloo processes: rank r's dataloader yields the micro-batches its rebalancing sampler gives it, unsharded
    again by accelerate."""
    lengths = [(i * 53) % 97 + 1 for i in range(64)]
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), str(script), json.dumps(lengths), str(tmp_path)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = rank_micro_batches(lengths, 8, 2, 2, seed=7)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["world"] == 2 and got["batches"] == expected[rank]


@pytest.mark.parametrize("balance", [True, False])
def test_trainer_hook(tmp_path, balance):
    """The Trainer's sampler takes its micro-batch, accumulation, world size and seed; balance_ranks False:
    transformers' order over one process's step."""
    from datasets import Dataset
    from transformers.trainer_pt_utils import BatchRebalanceSampler

    from alpaca_cot import resumable
    from alpaca_cot.trainer import _training_args

    lengths = [(i * 7) % 50 + 1 for i in range(40)]
    data = Dataset.from_dict({"input_ids": [[i] for i in range(40)], "length": lengths})
    args = _training_args(output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=3,
                          group_by_length=True, length_column_name="length", use_cpu=True, report_to="none",
                          seed=5, data_seed=5, remove_unused_columns=False)
    trainer = resumable.trainer_class()(model=torch.nn.Linear(1, 1), args=args, train_dataset=data,
                                        data_collator=lambda rows: [r["input_ids"][0] for r in rows])
    trainer.balance_ranks = balance
    sampler = trainer._get_train_sampler()
    batches = list(trainer.get_train_dataloader())
    if balance:
        assert isinstance(sampler, BatchRebalanceSampler)
        assert (sampler.effective_batch_size, sampler.dp_size, sampler.grad_accum) == (12, 1, 3)
        assert batches == rank_micro_batches(lengths, 12, 1, 3, seed=5)[0]
    else:
        assert isinstance(sampler, EpochSeededLengthSampler) and sampler.batch_size == 12
        order = list(EpochSeededLengthSampler(lengths, 12, seed=5))
        assert batches == [order[i:i + 4] for i in range(0, 40, 4)]
