"""Labelled text pairs: reading them, and grouping those that share a text (leak-free splits)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from semcache.errors import InvalidInputError

__all__ = ["LabelledPair", "pair_groups", "read_pairs"]


@dataclass(frozen=True, slots=True)
class LabelledPair:
    """Two texts and whether a cache may answer one with the other's response."""

    text_a: str
    text_b: str
    label: bool


def pair_groups(pairs: Sequence[LabelledPair]) -> list[str]:
    """Per pair, a key shared by every pair it is connected to through a common text.

    Pairs that share a text, directly or through other pairs, get the same key (the group's
    smallest text), so a split by key never puts one sentence on both sides: PAWS reuses each
    source sentence in many pairs, and QQP repeats popular questions.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for p in pairs:
        a, b = find(p.text_a), find(p.text_b)
        if a != b:
            parent[max(a, b)] = min(a, b)  # the root is the group's smallest text
    return [find(p.text_a) for p in pairs]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return io.TextIOWrapper(open(path, "rb"), encoding="utf-8", newline="")


def _parse_label(value: object, where: str) -> bool:
    text = str(value).strip().lower()
    if text in {"1", "true", "1.0"}:
        return True
    if text in {"0", "false", "0.0"}:
        return False
    raise InvalidInputError(f"{where}: label must be 0/1 or true/false, got {value!r}")


def _iter_pairs(path: Path) -> Iterator[LabelledPair]:
    is_tsv = path.name.removesuffix(".gz").endswith((".tsv", ".tab"))
    with _open_text(path) as f:
        if is_tsv:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for line, row in enumerate(reader, start=2):
                try:
                    a, b, label = row["sentence1"], row["sentence2"], row["label"]
                except KeyError as e:
                    raise InvalidInputError(
                        f"{path}:{line}: a TSV needs columns sentence1, sentence2, label"
                    ) from e
                yield LabelledPair(a, b, _parse_label(label, f"{path}:{line}"))
            return
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                a, b = obj["text_a"], obj["text_b"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise InvalidInputError(
                    f"{path}:{line}: expected a JSON object with text_a, text_b, label"
                ) from e
            yield LabelledPair(str(a), str(b), _parse_label(obj.get("label"), f"{path}:{line}"))


def read_pairs(path: str | Path, *, limit: int | None = None) -> list[LabelledPair]:
    """Read labelled pairs: JSONL ``{"text_a", "text_b", "label"}`` (optionally ``.gz``) or a TSV
    with a header ``sentence1``, ``sentence2``, ``label`` (the PAWS layout)."""
    out: list[LabelledPair] = []
    for pair in _iter_pairs(Path(path)):
        if limit is not None and len(out) >= limit:
            break
        if pair.text_a.strip() and pair.text_b.strip():
            out.append(pair)
    if not out:
        raise InvalidInputError(f"{path}: no labelled pairs found")
    return out
