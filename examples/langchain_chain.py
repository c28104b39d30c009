"""A small retrieval chain (LCEL) with semcache as its retriever and its LLM cache. Runs offline.

    python examples/langchain_chain.py [--path DIR]

The chat model is LangChain's FakeListChatModel (swap in any real one); the retriever, the
embedding model and the cache are real semcache components. The second, paraphrased question
is answered from the cache: the model is not called again.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from semcache import EmbeddedBackend, SemanticCache, SentenceTransformerEmbedder
from semcache_langchain import CachedRetriever, SemanticLLMCache, SemcacheRetriever

DOCS = [
    Document(page_content="The Eiffel Tower is in Paris, the capital of France.", id="paris"),
    Document(page_content="Mount Fuji is the highest mountain in Japan.", id="fuji"),
    Document(page_content="Water boils at 100 degrees Celsius at sea level.", id="water"),
]

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer from the context only.\n\nContext:\n{context}"),
        ("human", "{question}"),
    ]
)


def main(path: Path) -> None:
    embedder = SentenceTransformerEmbedder()  # all-MiniLM-L6-v2, packaged: no download
    cache = SemanticCache(embedder=embedder, backend=EmbeddedBackend(path / "cache"))
    set_llm_cache(SemanticLLMCache(cache))

    retriever = CachedRetriever(
        retriever=SemcacheRetriever.from_documents(DOCS, embedder, path=path / "docs", k=1),
        cache=cache,
        scope_name="facts-v1",
    )
    model = FakeListChatModel(responses=["Paris.", "(the model was called twice)"])

    def context(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs)

    chain = (
        {"context": retriever | context, "question": RunnablePassthrough()}
        | PROMPT
        | model
        | StrOutputParser()
    )
    for question in ("Where is the Eiffel Tower?", "Where is the Eiffel Tower located?"):
        print(f"Q: {question}\nA: {chain.invoke(question)}")
    info = cache.info()
    print(
        f"semcache: {info.hits} hits ({info.hits_exact} exact, {info.hits_semantic} semantic), "
        f"{info.misses} misses, {info.stores} stores"
    )
    cache.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, help="store directory (default: a temporary one)")
    args = parser.parse_args()
    if args.path is not None:
        main(args.path)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
