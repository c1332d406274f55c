"""Times how long every script takes to refuse a misspelled flag, against the time of `import torch` alone.

    python scripts/benchmark_cli.py [--repeats 5] [--out benchmarks/cpu-cli-startup.json]

The flags are checked before torch is imported (tests/test_cli.py makes `import torch` fail and checks that
each script still prints its one-line flag error); this measures what that buys, on this machine, as the
wall time of a child process (median of --repeats runs). It replaces the wall-clock assertion the CLI test
used to make, which failed under load.
"""

import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from alpaca_cot import ROOT, outputs
from alpaca_cot.cli import UserError, run
from alpaca_cot.io import write_json_atomic


def seconds(args: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def main(repeats: int = 5, out: str = None, overwrite: bool = False):
    """Print (and with --out write) each script's time to refuse a misspelled flag, and torch's import time.

    Args:
        repeats: runs of each command; the median is reported.
        out: also write the figures to this JSON file.
        overwrite: replace an existing --out file (a JSON file only).
    """
    if repeats < 1:
        raise UserError(f"--repeats must be at least 1, got {repeats}")
    if out is not None:
        outputs.check_outputs([outputs.Output(out, "--out", "json", 1 << 16)], (), overwrite)
    scripts = [ROOT / "finetune.py", ROOT / "generate.py", *sorted((ROOT / "scripts").glob("*.py"))]
    report = {"machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d"), "repeats": repeats,
              "import_torch_s": seconds(["-c", "import torch"], repeats), "python_s": seconds(["-c", "pass"], repeats),
              "misspelled_flag_s": {}}
    for script in scripts:
        report["misspelled_flag_s"][script.relative_to(ROOT).as_posix()] = seconds([str(script), "--no_such_flag", "1"],
                                                                                   repeats)
    width = max(map(len, report["misspelled_flag_s"]))
    print(f"{'python -c pass':{width}s} {report['python_s']:6.3f} s\n{'import torch':{width}s} "
          f"{report['import_torch_s']:6.3f} s")
    for name, s in report["misspelled_flag_s"].items():
        print(f"{name:{width}s} {s:6.3f} s")
    if out is not None:
        write_json_atomic(report, Path(out))
        print(f"wrote {out}")
    return report


if __name__ == "__main__":
    run(main)
