"""Length-grouped order for several processes: each rank gets an equal share of every step's padded tokens.

accelerate deals a sampler's micro-batches round-robin (micro-batch i to rank i % world, each rank
accumulating its consecutive ones), and DDP synchronises once per optimizer step, so a step lasts
as long as its slowest rank: the sum of that rank's micro-batches' padded tokens. transformers'
length-grouped order, sized by one process's step, sorts world times fewer records together on
several processes (more padding) and hands rank 0 the longest micro-batch of every step.

Here megabatches are sized by the global step (micro-batch x accumulation x world), so a step holds
the records one process would take at the same global batch; each step's micro-batches of
consecutive records are dealt to ranks longest first to the least loaded rank with room, then
laid out in the order accelerate deals them. One process gets transformers' order unchanged.
"""


def padded_tokens(batch: list[int], lengths, multiple: int = 8) -> int:
    """Tokens of a micro-batch padded to its longest record, rounded up as the collator pads."""
    longest = max(lengths[i] for i in batch)
    return len(batch) * -(-longest // multiple) * multiple


def balanced_order(lengths, micro: int, world: int, accumulation: int, generator) -> list[int]:
    """Every index once: length-grouped by global step, each step's micro-batches balanced over ranks."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    step = micro * accumulation * world
    grouped = get_length_grouped_indices(lengths, step, generator=generator)
    order = []
    for start in range(0, len(grouped), step):
        order += deal_step(grouped[start:start + step], lengths, micro, world)
    return order


def deal_step(indices: list[int], lengths, micro: int, world: int) -> list[int]:
    """One step's indices reordered so that accelerate's round-robin deal balances the ranks' padded tokens.

    A last step shorter than a full one keeps its micro-batch count and slots (micro-batch i of the
    step goes to rank i % world); only a final micro-batch shorter than `micro` stays last.
    """
    batches = [indices[i:i + micro] for i in range(0, len(indices), micro)]
    short = batches.pop() if batches and len(batches[-1]) < micro else []
    capacity = [len(range(rank, len(batches), world)) for rank in range(world)]
    loads, dealt = [0] * world, [[] for _ in range(world)]
    for batch in sorted(batches, key=lambda b: padded_tokens(b, lengths), reverse=True):  # stable: ties keep order
        rank = min((r for r in range(world) if len(dealt[r]) < capacity[r]), key=lambda r: loads[r])
        dealt[rank].append(batch)
        loads[rank] += padded_tokens(batch, lengths)
    rounds = max(capacity, default=0)
    return [i for a in range(rounds) for rank in range(world) if a < capacity[rank] for i in dealt[rank][a]] + short


def rank_loads(order: list[int], lengths, micro: int, world: int, accumulation: int) -> list[list[int]]:
    """Padded tokens of each rank in each full optimizer step, as accelerate deals `order`."""
    batches = [order[i:i + micro] for i in range(0, len(order) - len(order) % micro, micro)]
    per_step = world * accumulation
    steps = []
    for start in range(0, len(batches) - per_step + 1, per_step):
        loads = [0] * world
        for k, batch in enumerate(batches[start:start + per_step]):
            loads[k % world] += padded_tokens(batch, lengths)
        steps.append(loads)
    return steps


def balance_stats(order: list[int], lengths, micro: int, world: int, accumulation: int) -> dict:
    """worst and mean max/min of the ranks' padded tokens per step; efficiency: mean over max summed over steps
    (the share of the slowest rank's time the average rank computes, if time follows padded tokens)."""
    steps = rank_loads(order, lengths, micro, world, accumulation)
    ratios = [max(s) / min(s) for s in steps]
    return {"steps": len(steps), "worst_max_over_min": max(ratios), "mean_max_over_min": sum(ratios) / len(ratios),
            "efficiency": sum(sum(s) / world for s in steps) / sum(max(s) for s in steps)}


def padding_share(order: list[int], lengths, micro: int) -> float:
    """Share of padding over all micro-batches of `order` cut consecutively."""
    batches = [order[i:i + micro] for i in range(0, len(order), micro)]
    padded = sum(padded_tokens(b, lengths) for b in batches)
    return 1 - sum(lengths[i] for i in order) / padded
