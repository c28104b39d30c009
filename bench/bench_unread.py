"""Text the embedder cannot read: how often it decides a hit, and what the guard does (writes
"Unread text").

Two measurements. (1) The labelled sets' measure parts (bench/_matcher_data.py, the same pairs
and cached scores as bench_matcher.py): pairs whose unread parts differ (characters the packaged
tokenizer maps to [UNK], or text past its 256-token window), and how many of the untuned and the
shipped matcher's hits the `UnreadTextGuard` refuses. (2) A long-prompt stream: QQP measure pairs
each put after one shared SciFact passage of more than 256 tokens (the shape of a RAG prompt
with the question last), stored then looked up through a real `SemanticCache` (the shipped
embedder, min_similarity 0.95), once with the lexical guard alone and once with the default
guards; and the same pairs with the question *first*, which the window reads.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/bench_unread.py
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_matcher as bm
from _matcher_data import SETS
from _pairs_cache import DATA
from _report import write_section

from semcache import (
    CachePolicy,
    Embedder,
    LexicalGuard,
    MemoryBackend,
    SemanticCache,
    TextWindow,
    default_embedder,
)
from semcache.embedders.adapter import read_adapter
from semcache.embedders.shipped import EMBEDDER, VERIFIER
from semcache.embedders.window import text_window_of
from semcache.matching.bounds import clopper_pearson_upper
from semcache.measure.pairs import LabelledPair
from semcache.measure.replay import vetoed

NOTE = """\
How to read it. With the question last, the window ends inside the passage, so every pair has the
same vector and the lexical guard alone serves whatever was stored: the false-hit rate is the
share of non-duplicates. The default guards refuse them all (the unread tails differ). With the
question first the window reads it, but the shared passage dominates the mean-pooled vector and
the false-hit rate stays high; the guard refuses most of those hits too, because each question's
length moves the cut, so the unread tails start at different words. Neither layout is one a
semantic cache should match on: keep long context out of the embedded text (with `ChatRequest`
the cache embeds only the last user turn; the system prompt and earlier turns are scope). Text
the model maps to [UNK] is rare in these English sets: in QQP every such pair is labelled
different, and GPTCache's four are paraphrases with an emoji on one side."""

STREAM_PAIRS = 300  # seeded sample of QQP measure pairs for the long-prompt stream


def labelled_sets(window: TextWindow) -> list[str]:
    emb, ver = read_adapter(EMBEDDER.path), read_adapter(VERIFIER.path)
    point = json.loads(bm.POINT.read_text())
    rows = []
    for name in SETS:
        pairs = bm.pairs_of(name, "measure")
        # the hits the matcher would serve with the lexical guard alone, before this guard
        s = replace(bm.score(name, "measure", emb, ver), veto=vetoed([LexicalGuard()], pairs))
        differs = np.array([window.unread(p.text_a) != window.unread(p.text_b) for p in pairs])
        served = {
            "untuned": bm.untuned(s),
            "shipped": bm.shipped(s, point["min_similarity"], point["high"],
                                  point["min_score"], point["reorder_overlap"]),
        }  # fmt: skip
        cells = []
        for hits in served.values():
            refused = hits & differs
            cells.append(f"{int(refused.sum())} of {int(hits.sum())} "
                         f"({int((refused & ~s.labels).sum())} labelled false)")  # fmt: skip
        rows.append(
            f"| {bm.TITLES[name]} | {len(pairs):,} | {int(differs.sum())} "
            f"({int((differs & ~s.labels).sum())} labelled different) | {cells[0]} | {cells[1]} |"
        )
        print(rows[-1], flush=True)
    return rows


def document() -> str:
    """One SciFact passage of more than 256 tokens (the first such in corpus.jsonl)."""
    with (DATA / "beir-scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            text = f"{doc['title']}. {doc['text']}"
            if len(text.split()) > 320:
                return text
    raise SystemExit("no long passage in beir-scifact/corpus.jsonl")


def stream(embedder: Embedder, pairs: list[LabelledPair], doc: str) -> list[str]:
    rows = []
    layouts = {
        "question last": lambda q: f"Context: {doc}\n\nQuestion: {q}",
        "question first": lambda q: f"Question: {q}\n\nContext: {doc}",
    }
    labels = np.array([p.label for p in pairs])
    for layout, prompt in layouts.items():
        for guards_name, guards in (("lexical guard only", (LexicalGuard(),)),
                                    ("default guards", None)):  # fmt: skip
            hits = np.zeros(len(pairs), dtype=bool)
            for i, p in enumerate(pairs):
                with SemanticCache(
                    embedder=embedder,
                    backend=MemoryBackend(),
                    policy=CachePolicy(min_similarity=0.95),
                    guards=guards,
                ) as cache:
                    cache.store(prompt(p.text_a), "answer")
                    hits[i] = cache.lookup(prompt(p.text_b)).hit
            n, false = int(hits.sum()), int((hits & ~labels).sum())
            fhr = f"{false / n:.3f}" if n else "-"
            rows.append(f"| {layout} | {guards_name} | {n} | {(n - false) / labels.sum():.3f} "
                        f"| {false} | {fhr} | {clopper_pearson_upper(false, n):.3f} |")  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    embedder = default_embedder()
    window = text_window_of(embedder)
    if window is None:
        raise SystemExit("the default embedder has no text window")
    set_rows = labelled_sets(window)
    pairs = random.Random(0).sample(bm.pairs_of("qqp", "measure"), STREAM_PAIRS)
    doc = document()
    stream_rows = stream(embedder, pairs, doc)
    positives = sum(p.label for p in pairs)
    body = "\n".join(
        [
            "Command: `OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/bench_unread.py`. "
            + " ".join((__doc__ or "").split("\n\n")[1].split()),
            "",
            "**Labelled sets** (measure parts): pairs whose unread parts differ, and the hits"
            " the guard refuses.",
            "",
            "| set | pairs | unread parts differ | untuned hits refused | shipped hits refused |",
            "|---|---:|---:|---:|---:|",
            *set_rows,
            "",
            f"**Long prompts**: {STREAM_PAIRS} QQP measure pairs ({positives} duplicates), each"
            f" after one SciFact passage of {len(doc.split())} words; one store and one lookup"
            " per pair, in a fresh cache.",
            "",
            "| layout | guards | hits | recall | false hits | false-hit rate | upper (95%) |",
            "|---|---|---:|---:|---:|---:|---:|",
            *stream_rows,
            "",
            NOTE,
        ]
    )
    write_section("Unread text", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
