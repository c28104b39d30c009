"""semcache for LangChain. Needs ``pip install 'semcache-middleware[langchain]'``.

- :class:`SemanticLLMCache`: an LLM cache for ``set_llm_cache``, partitioned by ``llm_string``.
- :class:`CachedRetriever`: a semantic cache in front of any LangChain retriever.
- :class:`SemcacheRetriever`: a LangChain retriever over semcache's hybrid retriever.
"""

from __future__ import annotations

from semcache.errors import MissingDependencyError

try:
    import langchain_core  # noqa: F401
except ImportError:
    raise MissingDependencyError("langchain-core", "langchain") from None

from semcache_langchain.cached_retriever import CachedRetriever
from semcache_langchain.codec import (
    documents_from_json,
    documents_to_json,
    generations_from_json,
    generations_to_json,
)
from semcache_langchain.llm_cache import SemanticLLMCache
from semcache_langchain.retriever import SEARCH_TYPES, SemcacheRetriever

__all__ = [
    "SEARCH_TYPES",
    "CachedRetriever",
    "SemanticLLMCache",
    "SemcacheRetriever",
    "documents_from_json",
    "documents_to_json",
    "generations_from_json",
    "generations_to_json",
]
