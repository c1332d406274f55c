"""English Alpaca records with reference outputs: scored by the share of answers in English, their length in
words and ROUGE-L against the reference."""

from alpaca_cot.eval import scoring
from alpaca_cot.eval.tasks.base import REFERENCES, Task, dataset_of, field, mean, percent


class English(Task):
    name = "english"
    rank = 2
    scores = ("english", "words", "rouge_l")
    metrics = {"english": ("English answers in English", lambda r: r["english"], False),
               "rouge_l": ("English ROUGE-L", lambda r: r["rouge_l"], False)}

    def item(self, path, place, raw: dict) -> dict:
        item = super().item(path, place, raw)
        item["dataset"] = dataset_of(path, raw)
        item["gold"] = field(path, place, raw, *REFERENCES)
        return item

    def score(self, row: dict) -> dict:
        out = row["output"]
        return {"english": scoring.is_english(out), "words": len(out.split()),
                "rouge_l": round(scoring.rouge_l(row["gold"], out), 4)}

    def summarize(self, rows: list[dict]) -> dict:
        return {"n": len(rows), "english_share": mean(r["english"] for r in rows),
                "mean_words": mean(r["words"] for r in rows), "rouge_l": mean(r["rouge_l"] for r in rows)}

    def markdown(self, summary: dict) -> list[str]:
        s = summary
        return [f"English (n={s['n']}): answers in English {percent(s['english_share'])}%, "
                f"{s['mean_words']} words on average, ROUGE-L {percent(s['rouge_l'])}", ""]
