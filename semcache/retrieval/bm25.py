"""BM25 over chunk texts with bm25s (Lucene variant), English stopwords and Snowball stemming."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.errors import ConfigurationError, MissingDependencyError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["Bm25Arrays", "Bm25Index", "Bm25Params"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Bm25Params:
    """BM25 settings. The defaults are bm25s's (and Lucene's common) ``k1=1.5, b=0.75``.

    Attributes:
        k1: term-frequency saturation.
        b: length normalisation.
        stemming: Snowball English stemming (needs PyStemmer, in the ``retrieval`` extra).
        stopwords: drop English stopwords.
    """

    k1: float = 1.5
    b: float = 0.75
    stemming: bool = True
    stopwords: bool = True

    def __post_init__(self) -> None:
        if not math.isfinite(self.k1) or self.k1 < 0:
            raise ConfigurationError(f"k1 must be a finite number >= 0, got {self.k1!r}")
        if not 0.0 <= self.b <= 1.0:
            raise ConfigurationError(f"b must be in [0, 1], got {self.b!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Bm25Arrays:
    """A built index as plain data (for :mod:`semcache.retrieval.bm25_file`).

    Attributes:
        ids: the document id of each column.
        vocab: token -> token id.
        data, indices, indptr: bm25s's precomputed scores, a sparse matrix (CSC) of token ids
            by documents.
    """

    ids: list[str]
    vocab: dict[str, int]
    data: NDArray[np.float32]
    indices: NDArray[np.int32]
    indptr: NDArray[np.int64]


class Bm25Index:
    """An immutable BM25 index over ``(id, text)`` pairs; rebuild it to change the corpus."""

    def __init__(self, params: Bm25Params | None = None) -> None:
        try:
            import bm25s
        except ImportError as e:
            raise MissingDependencyError("bm25s", "retrieval") from e
        self.params = params or Bm25Params()
        self._bm25s = bm25s
        self._stemmer: Any = None
        if self.params.stemming:
            try:
                import Stemmer  # type: ignore[import-not-found]
            except ImportError as e:
                raise MissingDependencyError("PyStemmer", "retrieval") from e
            self._stemmer = Stemmer.Stemmer("english")
        self._ids: list[str] = []
        self._model: Any = None
        self._vocab: dict[str, int] = {}

    def _tokens(self, texts: Sequence[str]) -> list[list[str]]:
        out = self._bm25s.tokenize(
            list(texts),
            stopwords="en" if self.params.stopwords else None,
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        return [list(t) for t in out]

    def build(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Index ``texts``; ``ids[i]`` names ``texts[i]`` in results."""
        self._ids = list(ids)
        if not self._ids:
            self._model, self._vocab = None, {}
            return
        model = self._bm25s.BM25(k1=self.params.k1, b=self.params.b, method="lucene")
        model.index(self._tokens(texts), show_progress=False)
        self._model = model
        self._vocab = dict(model.vocab_dict)

    def arrays(self) -> Bm25Arrays | None:
        """The built index as plain arrays; ``None`` when it is empty."""
        if self._model is None:
            return None
        scores = self._model.scores
        return Bm25Arrays(
            ids=list(self._ids),
            vocab=dict(self._vocab),
            data=np.asarray(scores["data"]),
            indices=np.asarray(scores["indices"]),
            indptr=np.asarray(scores["indptr"]),
        )

    def restore(self, arrays: Bm25Arrays) -> None:
        """Take a built index from :meth:`arrays` (of an index with the same params).

        Raises:
            ValueError: the arrays do not describe one consistent index.
        """
        # bm25s's vocabulary may hold one more token (the empty one) than the matrix has rows.
        ids = sorted(arrays.vocab.values())
        if ids != list(range(len(ids))) or not 0 <= len(ids) - (len(arrays.indptr) - 1) <= 1:
            raise ValueError("BM25 vocabulary does not match the score matrix")
        if len(arrays.data) != len(arrays.indices) or int(arrays.indptr[-1]) != len(arrays.data):
            raise ValueError("BM25 score matrix is inconsistent")
        if len(arrays.indices) and int(arrays.indices.max()) >= len(arrays.ids):
            raise ValueError("BM25 score matrix names more documents than it has ids")
        model = self._bm25s.BM25(k1=self.params.k1, b=self.params.b, method="lucene")
        model.vocab_dict = dict(arrays.vocab)
        model.unique_token_ids_set = set(arrays.vocab.values())
        model.nonoccurrence_array = None
        model.scores = {
            "data": arrays.data,
            "indices": arrays.indices,
            "indptr": arrays.indptr,
            "num_docs": len(arrays.ids),
        }
        self._ids, self._vocab, self._model = list(arrays.ids), dict(arrays.vocab), model

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` ``(id, score)`` pairs with a positive score, best first."""
        if self._model is None or k <= 0:
            return []
        token_ids = [self._vocab[t] for t in self._tokens([query])[0] if t in self._vocab]
        if not token_ids:
            return []
        scores = np.asarray(self._model.get_scores_from_ids(token_ids), dtype=np.float32)
        k = min(k, scores.shape[0])
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]
        return [(self._ids[i], float(scores[i])) for i in top if scores[i] > 0]

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def nbytes(self) -> int:
        """Bytes of the score matrix (the index proper; vocabulary strings not counted)."""
        if self._model is None:
            return 0
        return int(sum(np.asarray(v).nbytes for v in self._model.scores.values()))
