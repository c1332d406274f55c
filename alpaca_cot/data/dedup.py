"""Duplicate removal and decontamination, on the normalised prompt of each record.

The prompt is the user turns of the history, the instruction and the input. Normalised: NFKC, lower
case, FLAN's literal backslash-n read as a space, punctuation and symbols dropped, white space collapsed.

- exact: a record whose normalised prompt was seen before (in --data order, across sources) goes.
- near: also a record whose character 5-gram set has a Jaccard similarity of at least NEAR with an
  earlier one. Candidates come from MinHash (HASHES hashes in BANDS bands, locality-sensitive
  hashing); each is confirmed on the two 5-gram sets, so no pair below NEAR is ever removed.

Decontamination drops every training record whose normalised prompt equals an evaluation row's,
contains a whole evaluation prompt of at least LONG characters (FLAN wraps its questions in
templates), or, with near, is a near duplicate of one.
"""

import zlib

import numpy as np
from tqdm import tqdm

from alpaca_cot.text import normalise as normalise_text

N = 5
NEAR = 0.8
HASHES, BANDS = 128, 16
LONG = 40
ANCHOR = 16
_PRIME = (1 << 31) - 1
_rng = np.random.default_rng(0)
_A = _rng.integers(1, _PRIME, HASHES, dtype=np.uint64)
_B = _rng.integers(0, _PRIME, HASHES, dtype=np.uint64)


def normalise(text: str) -> str:
    """The key for dedup and decontamination (see above); cot.question_key is the lighter one hold-outs draw by."""
    return normalise_text(text, flan_newlines=True, punctuation="space")


def prompt_key(record: dict) -> str:
    turns = [user for user, _ in record.get("history") or []]
    return normalise(" ".join([*turns, record.get("instruction", ""), record.get("input", "")]))


def shingles(key: str) -> set[str]:
    return {key[i:i + N] for i in range(max(1, len(key) - N + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def _bands(key: str) -> list[bytes]:
    x = np.fromiter((zlib.crc32(s.encode("utf-8")) for s in shingles(key)), dtype=np.uint64) % _PRIME
    signature = ((_A[:, None] * x[None, :] + _B[:, None]) % _PRIME).min(axis=1)
    rows = HASHES // BANDS
    return [bytes([b]) + signature[b * rows:(b + 1) * rows].tobytes() for b in range(BANDS)]


class Index:
    """Normalised prompts seen so far; `seen(key)` says whether a new one repeats any (exactly or nearly)."""

    def __init__(self, near: bool):
        self.exact, self.near, self.buckets = set(), near, {}

    def seen(self, key: str) -> bool:
        if key in self.exact:
            return True
        if not self.near:
            return False
        mine = shingles(key)
        candidates = {k for band in _bands(key) for k in self.buckets.get(band, ())}
        return any(jaccard(mine, shingles(k)) >= NEAR for k in candidates)

    def add(self, key: str):
        if key in self.exact:
            return
        self.exact.add(key)
        if self.near:
            for band in _bands(key):
                self.buckets.setdefault(band, []).append(key)


class Contained:
    """Long evaluation prompts, found inside a training prompt through their first ANCHOR characters."""

    def __init__(self, keys):
        self.by_anchor = {}
        for key in keys:
            if len(key) >= LONG:
                self.by_anchor.setdefault(key[:ANCHOR], []).append(key)
        self.starts = {anchor[:2] for anchor in self.by_anchor}

    def __call__(self, key: str) -> bool:
        for i in range(len(key) - ANCHOR + 1):
            if key[i:i + 2] in self.starts and (hits := self.by_anchor.get(key[i:i + ANCHOR])):
                if any(key.startswith(hit, i) for hit in hits):
                    return True
        return False


def progress(sources, near: bool, desc: str):
    """A progress bar over every record for near matching (MinHash takes minutes on large sources); none for exact."""
    return tqdm(total=sum(len(records) for _, records in sources), desc=desc, unit="record",
                disable=True if not near else None, mininterval=1)


def deduplicate(sources: list[tuple[str, list[dict]]], near: bool) -> tuple[list, dict[str, int]]:
    """Sources with repeats removed (the first occurrence stays) and how many each lost."""
    index, kept, removed = Index(near), [], {}
    with progress(sources, near, "near dedup") as bar:
        for name, records in sources:
            keep = []
            for record in records:
                key = prompt_key(record)
                if not index.seen(key):
                    index.add(key)
                    keep.append(record)
                bar.update()
            kept.append((name, keep))
            removed[name] = len(records) - len(keep)
    return kept, removed


def decontaminate(sources: list[tuple[str, list[dict]]], eval_keys: list[str], near: bool) -> tuple[list, dict]:
    """Sources without records that repeat or contain an evaluation prompt, and how many each lost."""
    index, contained = Index(near), Contained(eval_keys)
    for key in eval_keys:
        index.add(key)
    kept, removed = [], {}
    with progress(sources, near, "near decontamination") as bar:
        for name, records in sources:
            keep = []
            for r in records:
                if not ((key := prompt_key(r)) and (index.seen(key) or contained(key))):
                    keep.append(r)
                bar.update()
            kept.append((name, keep))
            removed[name] = len(records) - len(keep)
    return kept, removed
