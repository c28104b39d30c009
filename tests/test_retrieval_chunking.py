"""The recursive splitter: boundaries, sizes and overlap; documents and their hashes."""

from __future__ import annotations

import itertools

import pytest

from semcache import SentenceTransformerEmbedder
from semcache.errors import ConfigurationError, InvalidInputError
from semcache.retrieval.chunking import ChunkingConfig, RecursiveSplitter, count_words
from semcache.retrieval.documents import Chunk, Document


def _sentences(n: int, words: int = 9) -> str:
    return " ".join(" ".join(f"w{i}x{j}" for j in range(words)) + "." for i in range(n))


def test_short_text_is_one_chunk() -> None:
    assert RecursiveSplitter(ChunkingConfig(max_tokens=50)).split("one two three") == [
        "one two three"
    ]


def test_paragraphs_are_preferred_boundaries() -> None:
    text = _sentences(3) + "\n\n" + _sentences(3)
    chunks = RecursiveSplitter(ChunkingConfig(max_tokens=40, overlap_tokens=0)).split(text)
    assert len(chunks) == 2
    assert chunks[0] == _sentences(3)
    assert chunks[1] == _sentences(3)


def test_sentences_pack_within_the_limit_with_overlap() -> None:
    text = _sentences(20, words=10)  # 20 sentences of 10 words
    splitter = RecursiveSplitter(ChunkingConfig(max_tokens=50, overlap_tokens=10))
    chunks = splitter.split(text)
    assert all(count_words(c) <= 50 for c in chunks)
    assert all(c.endswith(".") for c in chunks)  # cut at sentence ends
    for prev, nxt in itertools.pairwise(chunks):
        last_sentence = prev.split(". ")[-1]
        assert nxt.startswith(last_sentence)  # one 10-word sentence of overlap
    covered = " ".join(chunks)
    assert all(f"w{i}x0" in covered for i in range(20))


def test_a_word_longer_than_the_limit_is_cut() -> None:
    chunks = RecursiveSplitter(ChunkingConfig(max_tokens=16, overlap_tokens=0), count=len).split(
        "x" * 40
    )
    assert "".join(chunks) == "x" * 40
    assert all(len(c) <= 16 for c in chunks)


def test_config_is_validated() -> None:
    with pytest.raises(
        ConfigurationError, match=r"overlap_tokens must be in \[0, max_tokens // 2 = 50\], got 60"
    ):
        ChunkingConfig(max_tokens=100, overlap_tokens=60)
    with pytest.raises(ConfigurationError, match="max_tokens"):
        ChunkingConfig(max_tokens=4)
    assert ChunkingConfig(max_tokens=400).overlap == 60
    assert ChunkingConfig(max_tokens=400, overlap_tokens=60).fit(200) == ChunkingConfig(
        max_tokens=200, overlap_tokens=30
    )


def test_document_chunks_carry_ids_titles_and_hashes() -> None:
    doc = Document(id="d1", title="Title", text=_sentences(12), metadata={"lang": "en"})
    chunks = RecursiveSplitter(ChunkingConfig(max_tokens=40, overlap_tokens=8)).chunk(doc)
    assert [c.id for c in chunks] == [Chunk.make_id("d1", i) for i in range(len(chunks))]
    assert len(chunks) > 1
    assert all(c.doc_hash == doc.hash and c.title == "Title" for c in chunks)
    assert all(c.indexed_text.startswith("Title\n") for c in chunks)
    assert all(count_words(c.indexed_text) <= 40 for c in chunks)
    assert chunks[0].metadata == {"lang": "en"}


def test_document_hash_tracks_content() -> None:
    base = Document(id="d", text="alpha", title="t")
    assert base.hash == Document(id="d", text="alpha", title="t").hash
    assert base.hash != Document(id="d", text="alpha!", title="t").hash
    assert base.hash != Document(id="d", text="alpha", title="t", metadata={"v": 2}).hash
    assert (
        Document(id="d", text="ab", title="c").hash != Document(id="d", text="b", title="ca").hash
    )
    with pytest.raises(InvalidInputError):
        Document(id="", text="x")


@pytest.mark.model
def test_token_aware_with_the_embedders_tokenizer(st_embedder: SentenceTransformerEmbedder) -> None:
    splitter = RecursiveSplitter.for_embedder(st_embedder)
    window = st_embedder.model.max_seq_length - 2
    assert splitter.config.max_tokens == min(400, window)  # never beyond the model's window
    tokenizer = st_embedder.model.tokenizer
    doc = Document(
        id="long", title="A title", text=" ".join(["Photosynthesis converts light."] * 200)
    )
    chunks = splitter.chunk(doc)
    assert len(chunks) > 2
    for c in chunks:
        n = len(tokenizer(c.indexed_text, add_special_tokens=False, verbose=False)["input_ids"])
        assert n <= splitter.config.max_tokens + 2  # the header newline may merge differently
