"""The study's figures: FLAN CoT accuracy per dataset against chance, the language scores, and every
comparison as a forest plot. Bars are means over seeds; error bars are 95% intervals over seeds and
questions (alpaca_cot/study/significance.py)."""

from pathlib import Path


def _errors(estimates: list[dict]) -> list[list[float]]:
    return [[100 * (e["mean"] - e["low"]) for e in estimates], [100 * (e["high"] - e["mean"]) for e in estimates]]


def _cot(plt, results: dict, manifest: dict, out: Path) -> str:
    mixes = list(results["mixes"])
    datasets = list(results["mixes"][mixes[0]]["per_dataset"]["cot"])
    labels = datasets + ["all"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.6), sharey=True)
    width = 0.8 / len(mixes)
    for ax, metric in zip(axes, ("cot", "cot_trigger")):
        for i, mix in enumerate(mixes):
            found = results["mixes"][mix]
            estimates = [found["per_dataset"][metric][d] for d in datasets] + [found[metric]]
            ax.bar([j + i * width for j in range(len(labels))], [100 * e["mean"] for e in estimates], width,
                   yerr=_errors(estimates), capsize=2, label=mix)
        for kind, style in (("uniform", "k--"), ("majority", "k:")):
            floor = manifest["chance"][kind]
            for j, d in enumerate(labels):
                ax.plot([j - width / 2, j + 0.8 - width / 2], [100 * floor[d]] * 2, style, lw=1,
                        label=f"{kind} chance" if j == 0 else None)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, rotation=30)
        ax.set_title("FLAN CoT accuracy, " + ("with the CoT trigger" if metric == "cot_trigger" else "no trigger"))
        ax.set_ylabel("% correct")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out / "cot_accuracy.png", dpi=110)
    return "cot_accuracy.png"


def _language(plt, results: dict, out: Path) -> str:
    from alpaca_cot.study.report import LABELS

    mixes = list(results["mixes"])
    metrics = ("chinese", "final_number", "english", "rouge_l")
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        estimates = [results["mixes"][m][metric] for m in mixes]
        ax.bar([j + i * width for j in range(len(mixes))], [100 * e["mean"] for e in estimates], width,
               yerr=_errors(estimates), capsize=2, label=LABELS[metric])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(mixes))], mixes)
    ax.set_ylabel("%")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "language.png", dpi=110)
    return "language.png"


def _forest(plt, results: dict, out: Path) -> str:
    found = results["comparisons"]
    fig, ax = plt.subplots(figsize=(11, 0.34 * len(found) + 1.2))
    for y, f in enumerate(reversed(found)):
        color = "tab:blue" if f["family"] == "primary" else "tab:gray"
        ax.errorbar(100 * f["diff"], y, xerr=[[100 * (f["diff"] - f["low"])], [100 * (f["high"] - f["diff"])]],
                    fmt="o", color=color, capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(found)), [f"{f['label']} ({f['a']} → {f['b']})" if f["a"] != "no trigger" else f["label"]
                                      for f in reversed(found)], fontsize=7)
    ax.set_xlabel("difference, points (95% interval); blue: primary comparisons")
    fig.tight_layout()
    fig.savefig(out / "comparisons.png", dpi=110)
    return "comparisons.png"


def draw(results: dict, manifest: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [_cot(plt, results, manifest, out), _language(plt, results, out), _forest(plt, results, out)]
    plt.close("all")
    return names
