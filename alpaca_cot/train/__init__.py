"""The train stage: finetune's recipe (finetune: resolve -> prepare -> build -> train -> save), the Trainer
and its arguments (trainer, recipes), the output folder and resuming (checkpoints, resumable, rank_order),
launches over several processes (distributed), and what a run measures (throughput, profiling)."""
