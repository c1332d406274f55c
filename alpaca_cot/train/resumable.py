"""What makes a resumed run end exactly as an uninterrupted one: data order and the reported loss.

transformers builds its length-grouped sampler without a generator, so each epoch's order comes
from the global RNG at the moment the epoch starts, which a resumed run does not reproduce. Here
the order of epoch e is drawn from seed + e, and the lengths come from the dataset's precomputed
`length` column instead of measuring every row. Under several processes the order is balanced
over ranks (rank_order.py) unless the trainer's `balance_ranks` is False. The whole run's loss is
computed from the log history (which a checkpoint carries), with a log line forced at every checkpoint and at the end:
the Trainer's own train_loss covers only the steps of the last process start, and its final
unlogged remainder is rank 0's own share rather than the average over ranks.
"""

import torch
from torch.utils.data import Sampler

from alpaca_cot.train.rank_order import balanced_order


class EpochSeededLengthSampler(Sampler):
    """Length-grouped order (transformers' get_length_grouped_indices), drawn from seed + epoch.

    batch_size: one process's records per optimizer step. With micro_batch_size, the order is
    rank_order.balanced_order over `world` processes (one process: the same order).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, micro_batch_size: int = None, world: int = 1):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0
        self.micro_batch_size, self.world = micro_batch_size, world

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.micro_batch_size:
            return iter(balanced_order(self.lengths, self.micro_batch_size, self.world,
                                       self.batch_size // self.micro_batch_size, generator))
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def groups_by_length(args) -> bool:
    return getattr(args, "train_sampling_strategy", None) == "group_by_length" or getattr(args, "group_by_length", False)


def trainer_class():
    """transformers.Trainer with the epoch-seeded sampler (transformers 5.17 and 5.24 alike)."""
    from transformers import Trainer

    class ResumableTrainer(Trainer):
        balance_ranks = True  # False: transformers' order, whose micro-batches accelerate deals round-robin

        def _get_train_sampler(self, train_dataset=None):
            column = self.args.length_column_name
            if not groups_by_length(self.args) or column not in getattr(self.train_dataset, "column_names", ()):
                return super()._get_train_sampler(train_dataset)
            # self.train_dataset, not train_dataset: the Trainer has already dropped the length column there.
            micro = self.args.train_batch_size
            return EpochSeededLengthSampler(self.train_dataset[column], micro * self.args.gradient_accumulation_steps,
                                            self.args.data_seed if self.args.data_seed is not None else self.args.seed,
                                            micro_batch_size=micro if self.balance_ranks else None,
                                            world=self.args.world_size)

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
