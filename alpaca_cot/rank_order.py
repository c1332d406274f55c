"""Length-grouped micro-batches of equal cost, the same on any number of processes.

DDP synchronises once per optimizer step, so a step lasts as long as its slowest rank. Fixed-size
micro-batches cannot even that out when a rank holds one micro-batch a step: the one holding the
step's longest records sets the pace. Here a step holds the records one process would take at
the same global batch (transformers' length-grouped order over steps of the global batch, drawn
from seed + epoch), and transformers' BatchRebalanceSampler splits them into global_batch /
micro_batch micro-batches of equal cost (padded tokens, plus attention's quadratic term), fewer
records where they are long, then hands each rank its share. The split depends only on the
number of micro-batches per step, so 1, 2 or 4 GPUs train the same micro-batches.
"""

import torch


def padded_tokens(batch: list[int], lengths, multiple: int = 8) -> int:
    """Tokens of a micro-batch padded to its longest record, rounded up as the collator pads."""
    longest = max(lengths[i] for i in batch)
    return len(batch) * -(-longest // multiple) * multiple


def grouped_order(lengths, global_batch: int, seed: int) -> list[int]:
    """transformers' length-grouped order, sorted by length within megabatches of steps of global_batch."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    return get_length_grouped_indices(lengths, global_batch, generator=torch.Generator().manual_seed(seed))


def rebalanced_sampler(lengths, global_batch: int, world: int, accumulation: int, rank: int, seed: int,
                       drop_last: bool = False):
    """A BatchRebalanceSampler (which the Trainer passes as the dataloader's batch_sampler) whose steps
    follow grouped_order(seed + epoch) instead of a shuffle: this rank's micro-batches, `accumulation` a step."""
    from transformers.trainer_pt_utils import BatchRebalanceSampler

    class RebalancedLengthSampler(BatchRebalanceSampler):
        def __iter__(self):
            order = grouped_order(self.lengths, self.effective_batch_size, self.seed + self.epoch)
            steps = BatchRebalanceSampler([self.lengths[i] for i in order], self.effective_batch_size, self.dp_size,
                                          self.grad_accum, shuffle=False, rank=self.rank, drop_last=self.drop_last)
            return ([order[i] for i in batch] for batch in steps)

    return RebalancedLengthSampler(lengths, global_batch, world, accumulation, seed=seed, rank=rank,
                                   drop_last=drop_last)


def rank_micro_batches(lengths, global_batch: int, world: int, accumulation: int, seed: int, epoch: int = 0):
    """Every rank's micro-batches of an epoch, as the ranks' samplers yield them."""
    ranks = []
    for rank in range(world):
        sampler = rebalanced_sampler(lengths, global_batch, world, accumulation, rank, seed)
        sampler.set_epoch(epoch)
        ranks.append(list(sampler))
    return ranks


def balance_stats(ranks: list[list[list[int]]], lengths, accumulation: int) -> dict:
    """Per full optimizer step, each rank's padded tokens (ranks[r]: rank r's micro-batches, `accumulation`
    a step): worst and mean max/min over ranks; efficiency: mean over max summed over steps (the share of the
    slowest rank's time the average rank computes, if time follows padded tokens); the largest micro-batch."""
    steps = []
    for start in range(0, min(len(r) for r in ranks) - accumulation + 1, accumulation):
        steps.append([sum(padded_tokens(b, lengths) for b in r[start:start + accumulation]) for r in ranks])
    ratios = [max(s) / min(s) for s in steps]
    return {"steps": len(steps), "worst_max_over_min": max(ratios), "mean_max_over_min": sum(ratios) / len(ratios),
            "efficiency": sum(sum(s) / len(s) for s in steps) / sum(max(s) for s in steps),
            "largest_micro_batch": max(padded_tokens(b, lengths) for r in ranks for b in r)}


def padding_share(batches: list[list[int]], lengths) -> float:
    """Share of padding over micro-batches."""
    return 1 - sum(lengths[i] for b in batches for i in b) / sum(padded_tokens(b, lengths) for b in batches)
