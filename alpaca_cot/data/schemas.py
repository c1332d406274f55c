"""Which catalogue schema a file's records are in, so that `--data file.jsonl` trains on any of them.

A schema is a catalogue entry's format with its columns (and its ShareGPT tags or dialogue markers);
entries that share one are one schema, named after the first of them. The uniform schema {instruction,
input, output[, history]} is read as it is; every other one through convert.py's converter.

A record fits a schema when it holds the columns the format requires (catalog.FORMATS) and, for dialogue
text, its text begins with the schema's user marker. A file is in the schema that all its records fit;
records that fit none are bad records, reported by that schema's checks (a file none of whose records fit
any schema is read as uniform, so its errors name the uniform fields it lacks). When several fit, the rule:
1. a dialogue schema, whose marker opens the text, wins over schemas matched by column names alone
   (BELLE's multi-turn `instruction` holding `Human: ... Assistant:` is a dialogue, not one instruction);
2. then the schema that uses the most of the records' fields (Dolly's `context` as the input);
3. then the catalogue's order, the uniform schema first.
A file whose records fit no schema in common stops at the first record that breaks the agreement, naming
the fields it lacks.
"""

import json
from dataclasses import dataclass, field

from alpaca_cot.cli import UserError
from alpaca_cot.data.catalog import FORMATS, registry
from alpaca_cot.data.convert import CONVERTERS

UNIFORM = "uniform"
UNIFORM_COLUMNS = {"instruction": "instruction", "input": "input", "output": "output"}


@dataclass(frozen=True)
class Schema:
    name: str
    entry: dict = field(compare=False, hash=False)

    @property
    def uniform(self) -> bool:
        return self.name == UNIFORM

    @property
    def required(self) -> list[str]:
        return [self.entry["columns"][role] for role in FORMATS[self.entry["format"]]]

    @property
    def used(self) -> set[str]:
        return set(self.entry["columns"].values()) | ({"history"} if self.uniform else set())

    @property
    def by_marker(self) -> bool:
        return self.entry["format"] == "dialogue_text"

    def shortfall(self, row) -> str | None:
        """Why row does not fit this schema (the fields it lacks, or its text's missing marker), or None."""
        lacking = [c for c in self.required if c not in row] if isinstance(row, dict) else list(self.required)
        if lacking:
            return "lacks field(s) " + ", ".join(f"'{c}'" for c in lacking)
        if self.by_marker:
            column, marker = self.entry["columns"]["text"], self.entry["markers"]["user"]
            text = row[column]
            if not (isinstance(text, str) and text.lstrip().startswith(marker)):
                return f"field '{column}' does not begin with {marker!r}"
        return None

    def fits(self, row) -> bool:
        return self.shortfall(row) is None

    def describe(self) -> str:
        """Its fields as a file holds them, for messages."""
        fields = ", ".join(sorted(set(self.entry["columns"].values()), key=list(self.entry["columns"].values()).index))
        markers = self.entry.get("markers")
        return fields + (f" with turns marked {markers['user']!r}/{markers['assistant']!r}" if markers else "")

    def read(self, row) -> tuple[dict | None, str | None]:
        """The row as a uniform record (still to be checked), or why it cannot be one."""
        if self.uniform:
            return row, None
        if (why := self.shortfall(row)) is not None:
            return None, f"{why} of the {self.name} schema ({self.describe()})"
        return CONVERTERS[self.entry["format"]](row, self.entry)


def _key(entry: dict) -> str:
    return json.dumps({k: entry.get(k) for k in ("format", "columns", "tags", "markers")}, sort_keys=True)


def known() -> list[Schema]:
    """Every schema the catalogue's convertible entries use, in catalogue order, the uniform one first."""
    schemas = {_key({"format": "alpaca", "columns": UNIFORM_COLUMNS}): Schema(UNIFORM, {
        "format": "alpaca", "columns": UNIFORM_COLUMNS})}
    for name, source in registry().items():
        if source.entry["format"] in CONVERTERS:
            schemas.setdefault(_key(source.entry), Schema(name, source.entry))
    return list(schemas.values())


def _best(candidates: list[Schema], rows: list) -> Schema:
    """Rules 1 to 3 of the module docstring."""
    def score(schema: Schema):
        return schema.by_marker, sum(len(schema.used & set(row)) for row in rows if isinstance(row, dict))

    return max(candidates, key=score)  # max keeps the first of equals: the catalogue's order


def detect(rows: list[tuple[str, object]], path) -> Schema | None:
    """The schema of a file's (place, row) pairs, None when no row fits any; a UserError at the first row that
    fits none of the schemas the rows before it fit."""
    schemas, common, seen = known(), None, []
    for place, row in rows:
        fitting = [s for s in schemas if s.fits(row)]
        if not fitting:
            continue
        narrowed = fitting if common is None else [s for s in common if s in fitting]
        if not narrowed:
            before = _best(common, seen)
            raise UserError(f"{path}: {place}: {before.shortfall(row)} of the {before.name} schema ({before.describe()}) that the records before it are in; it fits "
                            f"{', '.join(s.name for s in fitting)}: a file holds one schema")
        common = narrowed
        seen.append(row)
    return _best(common, seen) if common else None
