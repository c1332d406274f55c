"""The evaluation tasks: one module per benchmark in this folder, each defining a `Task` subclass (base.py says
what a task must say). TASKS maps each task's name to it, found by importing every module of the folder, so a
new benchmark is one new file here: evaluation.py, predictions.py, scripts/evaluate.py --eval and the study
reach it through TASKS."""

import importlib
import pkgutil

from alpaca_cot.eval.tasks.base import Task


def tasks_of(module) -> list[Task]:
    """One instance of each Task subclass the module defines (not those it imports)."""
    return [value() for value in vars(module).values() if isinstance(value, type) and issubclass(value, Task)
            and value is not Task and value.__module__ == module.__name__]


def discover() -> dict[str, Task]:
    """{name: task} over the modules of this folder, in the order of their ranks."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if info.name == "base":
            continue
        for task in tasks_of(importlib.import_module(f"{__name__}.{info.name}")):
            if not task.name or task.name in found:
                raise RuntimeError(f"{__name__}.{info.name}: task {type(task).__name__} has an empty or a "
                                   f"duplicate name {task.name!r}")
            found[task.name] = task
    return dict(sorted(found.items(), key=lambda item: (item[1].rank, item[0])))


TASKS = discover()


def named(name: str, where: str) -> Task:
    """The registered task of that name; else one line, where it was asked for (a flag, a file), listing them."""
    if name not in TASKS:
        from alpaca_cot.cli import UserError

        raise UserError(f"{where}: unknown evaluation task {name!r} (registered: {', '.join(TASKS)})")
    return TASKS[name]
