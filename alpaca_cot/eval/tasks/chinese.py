"""Chinese instructions (BELLE records, or Belle-eval's question/std_answer/class): scored by the share of
non-empty answers written in Chinese and, where the reference has a number, by agreement of the final number."""

from alpaca_cot.eval import scoring
from alpaca_cot.eval.tasks.base import REFERENCES, Task, dataset_of, mean, percent


class Chinese(Task):
    name = "chinese"
    rank = 1
    scores = ("chinese", "final_number_match")
    metrics = {"chinese": ("Chinese answers in Chinese", lambda r: r["chinese"], False),
               "final_number": ("Chinese final number agrees", lambda r: r["final_number_match"], False)}

    def item(self, path, place, raw: dict) -> dict:
        item = super().item(path, place, raw)
        item["dataset"] = dataset_of(path, raw)
        # Open-ended items (Belle-eval's brainstorming, say) have no reference: only the number check needs one.
        item["gold"] = next((raw[k] for k in REFERENCES if isinstance(raw.get(k), str)), "")
        return item

    def score(self, row: dict) -> dict:
        out, want = row["output"], scoring.final_number(row["gold"])
        return {"chinese": bool(out.strip()) and scoring.is_chinese(out),
                "final_number_match": None if want is None else scoring.final_number(out) == want}

    def summarize(self, rows: list[dict]) -> dict:
        with_number = [r for r in rows if r["final_number_match"] is not None]
        return {"n": len(rows), "chinese_share": mean(r["chinese"] for r in rows),
                "empty_share": mean(not r["output"].strip() for r in rows), "final_number_n": len(with_number),
                "final_number_match": mean(r["final_number_match"] for r in with_number)}

    def markdown(self, summary: dict) -> list[str]:
        s = summary
        return [f"Chinese (n={s['n']}): answers in Chinese {percent(s['chinese_share'])}%, empty "
                f"{percent(s['empty_share'])}%, final number agrees {percent(s['final_number_match'])}% "
                f"(of {s['final_number_n']} with a number)", ""]
