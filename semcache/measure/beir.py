"""Load a BEIR-layout folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from semcache.errors import ConfigurationError, InvalidInputError
from semcache.retrieval.documents import Document

__all__ = ["BeirDataset", "load_beir"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BeirDataset:
    """A corpus, the judged queries of one split, and their graded relevance judgements."""

    name: str
    split: str
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _jsonl(path: Path) -> Iterator[dict[str, object]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise InvalidInputError(f"{path}:{n}: not JSON: {e}") from e


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or (n == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue  # blank line, or a header such as "query-id corpus-id score"
            if len(row) == 4:  # TREC format: qid, iteration, docid, grade
                row = [row[0], row[2], row[3]]
            if len(row) != 3:
                raise InvalidInputError(f"{path}:{n}: expected 3 tab-separated fields")
            out.setdefault(row[0], {})[row[1]] = int(row[2])
    return out


def load_beir(directory: str | Path, split: str | None = None) -> BeirDataset:
    """Read a BEIR folder. ``split`` names ``qrels/<split>.tsv``; by default ``test`` if present,
    else the only split there. Only queries with a judgement are kept."""
    root = Path(directory)
    splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
    if not (root / "corpus.jsonl").is_file() or not (root / "queries.jsonl").is_file():
        raise ConfigurationError(f"{root} is not a BEIR folder (corpus.jsonl, queries.jsonl)")
    if split is None:
        if "test" in splits:
            split = "test"
        elif len(splits) == 1:
            split = splits[0]
        else:
            raise ConfigurationError(f"{root}: choose a split among {splits}")
    if split not in splits:
        raise ConfigurationError(f"{root}: no qrels/{split}.tsv (have {splits})")
    corpus = []
    for rec in _jsonl(root / "corpus.jsonl"):
        corpus.append(
            Document(
                id=str(rec["_id"]),
                text=str(rec.get("text") or ""),
                title=str(rec.get("title") or ""),
            )
        )
    qrels = {
        q: rels
        for q, rels in _qrels(root / "qrels" / f"{split}.tsv").items()
        if any(g > 0 for g in rels.values())
    }
    queries = {}
    for rec in _jsonl(root / "queries.jsonl"):
        qid = str(rec["_id"])
        if qid in qrels:
            queries[qid] = str(rec["text"])
    missing = set(qrels) - set(queries)
    if missing:
        raise InvalidInputError(f"{root}: {len(missing)} judged queries missing from queries.jsonl")
    return BeirDataset(name=root.name, split=split, corpus=corpus, queries=queries, qrels=qrels)
