"""What makes a resumed run end exactly as an uninterrupted one: data order and the reported loss.

transformers builds its length-grouped sampler without a generator, so each epoch's order comes
from the global RNG at the moment the epoch starts, which a resumed run does not reproduce. Here
the order of epoch e is drawn from seed + e, and the lengths come from the dataset's precomputed
`length` column instead of measuring every row. Each step's records are split into micro-batches of
equal cost, the same on any number of processes (rank_order.py), unless the trainer's
`balance_ranks` is False: then transformers' order, cut into fixed micro-batches. The whole run's loss is
computed from the log history (which a checkpoint carries), with a log line forced at every checkpoint and at the end:
the Trainer's own train_loss covers only the steps of the last process start, and its final
unlogged remainder is rank 0's own share rather than the average over ranks.
"""

from torch.utils.data import Sampler

from .rank_order import grouped_order, rebalanced_sampler


class EpochSeededLengthSampler(Sampler):
    """Length-grouped order (transformers' get_length_grouped_indices) over steps of batch_size records
    (one process's), drawn from seed + epoch."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        return iter(grouped_order(self.lengths, self.batch_size, self.seed + self.epoch))


def groups_by_length(args) -> bool:
    return getattr(args, "train_sampling_strategy", None) == "group_by_length" or getattr(args, "group_by_length", False)


def trainer_class():
    """transformers.Trainer with the epoch-seeded sampler (transformers 5.17 and 5.24 alike)."""
    from transformers import Trainer

    class ResumableTrainer(Trainer):
        balance_ranks = True  # False: transformers' order, whose micro-batches accelerate deals round-robin

        def _get_train_sampler(self, train_dataset=None):
            a = self.args
            if not groups_by_length(a) or a.length_column_name not in getattr(self.train_dataset, "column_names", ()):
                return super()._get_train_sampler(train_dataset)
            # self.train_dataset, not train_dataset: the Trainer has already dropped the length column there.
            lengths = self.train_dataset[a.length_column_name]
            seed = a.data_seed if a.data_seed is not None else a.seed
            step = a.train_batch_size * a.gradient_accumulation_steps  # one process's records per step
            if not self.balance_ranks:
                return EpochSeededLengthSampler(lengths, step, seed)
            # A BatchRebalanceSampler: the Trainer hands it to the dataloader as its batch_sampler, unsharded.
            return rebalanced_sampler(lengths, step * a.world_size, a.world_size, a.gradient_accumulation_steps,
                                      a.process_index, seed, drop_last=a.dataloader_drop_last)

    return ResumableTrainer


def log_at_saves_callback():
    """Logs the loss at every checkpoint and at the last step, so that the log history covers every step."""
    from transformers import TrainerCallback

    class LogAtSaves(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if control.should_save or state.global_step >= state.max_steps:
                control.should_log = True

    return LogAtSaves()


def run_loss(log_history: list[dict]) -> float | None:
    """The mean training loss over every logged step of the run, resumed parts included."""
    total = steps = previous = 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            span = entry["step"] - previous
            total, steps, previous = total + entry["loss"] * span, steps + span, entry["step"]
    return total / steps if steps else None
