"""The evaluation stage: held-out sets answered and scored (evaluation, predictions), each kind of item a task of
tasks/ (one file per benchmark: cot, chinese, english), FLAN CoT answers read
as a person would (reading) and validated against readers (validation), the other scores (scoring), chance
baselines (chance), and standard benchmarks through lm-evaluation-harness (harness)."""
