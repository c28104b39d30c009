"""The demo: replay a realistic stream of user questions through ``@cached`` over a simulated LLM.

The stream comes from labelled Quora question pairs: one user asks ``text_a``; later another user
asks ``text_b``. For duplicate pairs the second question should hit; for non-duplicates (which are
often near-identical wording) a hit is a wrong answer. Some questions are also asked again verbatim
(with different case and spacing), as popular questions are.
"""

from __future__ import annotations

import gzip
import json
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from semcache.cache import SemanticCache
from semcache.keys import normalize_text
from semcache.llm.decorator import cached
from semcache.llm.options import CallOutcome
from semcache.measure.pairs import LabelledPair, pair_groups

__all__ = ["DemoReport", "Pair", "SimulatedLLM", "build_stream", "load_pairs", "run_demo"]

SYSTEM_PROMPT = "You are a helpful assistant. Answer the user's question concisely."


@dataclass(frozen=True, slots=True)
class Pair:
    text_a: str
    text_b: str
    label: int


def load_pairs(path: str | Path | None = None) -> list[Pair]:
    """Labelled pairs from gzip/plain JSONL (``text_a``, ``text_b``, ``label``).

    With no path, the sample shipped in the package (1,200 QQP pairs).
    """
    if path is None:
        ref = resources.files("semcache.data").joinpath("qqp_sample.jsonl.gz")
        raw = gzip.decompress(ref.read_bytes()).decode("utf-8")
    else:
        p = Path(path)
        data = p.read_bytes()
        raw = (gzip.decompress(data) if p.suffix == ".gz" else data).decode("utf-8")
    pairs = []
    for line in raw.splitlines():
        if line.strip():
            row = json.loads(line)
            pairs.append(Pair(str(row["text_a"]), str(row["text_b"]), int(row["label"])))
    return pairs


@dataclass(frozen=True, slots=True)
class Ask:
    """One request of the stream, and what a correct cache would do with it."""

    question: str
    pair: int  # index of the pair it came from
    cluster: int  # duplicate cluster of the question (union-find over positive labels)


def _clusters(pairs: Sequence[Pair]) -> dict[str, int]:
    """The duplicate cluster of every (normalised) question: linked through positive labels."""
    texts = list(
        dict.fromkeys(
            t for p in pairs for t in (normalize_text(p.text_a), normalize_text(p.text_b))
        )
    )
    links = [
        LabelledPair(normalize_text(p.text_a), normalize_text(p.text_b), True)
        for p in pairs
        if p.label == 1
    ]
    links += [LabelledPair(t, t, True) for t in texts]  # every question, linked or not
    group = {link.text_a: key for link, key in zip(links, pair_groups(links), strict=True)}
    roots: dict[str, int] = {}
    return {t: roots.setdefault(group[t], len(roots)) for t in texts}


def build_stream(
    pairs: Sequence[Pair], n_requests: int, *, repeat_rate: float = 0.15, seed: int = 0
) -> tuple[list[Ask], dict[str, int], set[tuple[str, str]]]:
    """A request stream: each chosen pair's first question, then (later) its second; plus repeats.

    Returns the stream, the duplicate cluster of every question, and the labelled non-duplicate
    pairs (normalised), used to score hits.
    """
    rng = random.Random(seed)
    cluster = _clusters(pairs)
    negatives = {
        tuple(sorted((normalize_text(p.text_a), normalize_text(p.text_b))))
        for p in pairs
        if p.label == 0
    }
    order = list(range(len(pairs)))
    rng.shuffle(order)
    stream: list[Ask] = []
    n_pairs = max(1, int(n_requests * (1 - repeat_rate)) // 2)
    for i in order[:n_pairs]:
        p = pairs[i]
        first = Ask(p.text_a, i, cluster[normalize_text(p.text_a)])
        second = Ask(p.text_b, i, cluster[normalize_text(p.text_b)])
        # the first ask goes anywhere; the second one after it
        pos = rng.randint(0, len(stream))
        stream.insert(pos, first)
        stream.insert(rng.randint(pos + 1, len(stream)), second)
    while len(stream) < n_requests:
        pos = rng.randint(1, len(stream))
        orig = stream[rng.randrange(pos)]
        variant = orig.question.upper() if rng.random() < 0.5 else f"  {orig.question} "
        stream.insert(pos, Ask(variant, orig.pair, orig.cluster))
    return stream[:n_requests], cluster, {(a, b) for a, b in negatives}


class SimulatedLLM:
    """A chat completion endpoint with realistic latency and token counts, and no network.

    Latency is ``ttft + completion_tokens * per_token`` (defaults: 0.35 s and 10 ms/token, about a
    hosted small model streaming 100 tokens/s), scaled by ``latency_scale``.
    """

    def __init__(self, *, latency_scale: float = 1.0, ttft: float = 0.35, per_token: float = 0.01):
        self.latency_scale = latency_scale
        self.ttft = ttft
        self.per_token = per_token
        self.calls = 0
        self.seconds = 0.0
        self._lock = threading.Lock()

    def completion_tokens(self, question: str) -> int:
        """A deterministic answer length (40-320 tokens) for a question."""
        return random.Random(normalize_text(question)).randint(40, 320)

    def latency(self, question: str) -> float:
        """Seconds the simulated model takes to answer ``question``."""
        tokens = self.completion_tokens(question)
        return (self.ttft + tokens * self.per_token) * self.latency_scale

    def __call__(self, *, model: str, messages: list[dict[str, str]], **params: Any) -> Any:
        question = messages[-1]["content"]
        completion = self.completion_tokens(question)
        prompt_tokens = sum(len(m["content"]) for m in messages) // 4 + 8
        delay = self.latency(question)
        time.sleep(delay)
        with self._lock:
            self.calls += 1
            self.seconds += delay
        return {
            "id": f"sim-{self.calls}",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": f"(answer to: {question.strip()})"},
                }
            ],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion},
        }


@dataclass(slots=True, kw_only=True)
class DemoReport:
    requests: int
    upstream_calls: int
    hits_exact: int
    hits_semantic: int
    coalesced: int
    misses: int
    correct_hits: int
    false_hits_labelled: int
    unverified_hits: int
    tokens_saved: int
    llm_seconds_saved: float
    wall_seconds: float
    threshold: float
    volatile: int = 0  # requests whose prompt the volatility guard recognised
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    examples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        return (self.requests - self.upstream_calls) / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["hit_rate"] = self.hit_rate
        return out


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": float("nan"), "p95": float("nan")}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(values), "p50": statistics.median(ordered), "p95": p95}


def run_demo(
    cache: SemanticCache,
    stream: Sequence[Ask],
    cluster: dict[str, int],
    negatives: set[tuple[str, str]],
    *,
    llm: SimulatedLLM,
    users: int = 32,
    model: str = "gpt-4o-mini",
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
) -> DemoReport:
    """Send ``stream`` through ``@cached(cache)`` from ``users`` concurrent threads."""
    seen: dict[int, tuple[float, str, str]] = {}
    lock = threading.Lock()
    local = threading.local()

    def note(outcome: CallOutcome) -> None:
        local.outcome = outcome.outcome.value

    @cached(cache, namespace="semcache-demo", on_outcome=note)
    def chat(*, model: str, messages: list[dict[str, str]], temperature: float = 0) -> Any:
        return llm(model=model, messages=messages, temperature=temperature)

    def ask(i: int, a: Ask) -> None:
        local.outcome = ""
        start = time.perf_counter()
        response = chat(
            model=model,
            messages=[
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": a.question},
            ],
        )
        elapsed = (time.perf_counter() - start) * 1000
        served = response["choices"][0]["message"]["content"]
        answered = served.removeprefix("(answer to: ").removesuffix(")")
        with lock:
            seen[i] = (elapsed, answered, local.outcome)

    before = cache.info()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=users) as pool:
        futures = [pool.submit(ask, i, a) for i, a in enumerate(stream)]
        done: Iterable[Any] = as_completed(futures)
        if progress is not None:
            done = progress(done, len(futures))
        for fut in done:
            fut.result()
    wall = time.perf_counter() - t0
    after = cache.info()

    correct = labelled_false = unverified = 0
    saved = 0.0
    lat: dict[str, list[float]] = {"hit": [], "coalesced": [], "miss": []}
    examples: list[tuple[str, str]] = []
    for i, a in enumerate(stream):
        elapsed, answered, outcome = seen[i]
        lat.setdefault(outcome, []).append(elapsed)
        if outcome not in ("hit", "coalesced"):
            continue
        saved += llm.latency(a.question)
        asked_norm, answered_norm = normalize_text(a.question), normalize_text(answered)
        if asked_norm == answered_norm or cluster.get(answered_norm) == a.cluster:
            correct += 1
        elif tuple(sorted((asked_norm, answered_norm))) in negatives:
            labelled_false += 1
            if len(examples) < 5:
                examples.append((a.question, answered))
        else:
            unverified += 1
    hits_exact = after.hits_exact - before.hits_exact
    return DemoReport(
        requests=len(stream),
        upstream_calls=llm.calls,
        hits_exact=hits_exact,
        hits_semantic=after.hits_semantic - before.hits_semantic,
        coalesced=after.coalesced - before.coalesced,
        misses=after.misses - before.misses,
        correct_hits=correct,
        false_hits_labelled=labelled_false,
        unverified_hits=unverified,
        tokens_saved=after.tokens_saved - before.tokens_saved,
        llm_seconds_saved=saved,
        wall_seconds=wall,
        threshold=cache.policy.min_similarity,
        volatile=after.volatile - before.volatile,
        latency_ms={k: _pct(v) for k, v in lat.items()},
        examples=examples,
    )
