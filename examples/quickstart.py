"""The README quickstart, runnable offline: a fake OpenAI-style client behind ``@cached``.

    python examples/quickstart.py [--dir ./.semcache-quickstart]

Swap ``FakeClient`` for ``openai.OpenAI()`` (and drop ``.model_dump()`` for a ``ModelCodec``) to
use a real model.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

from semcache import (
    CachePolicy,
    EmbeddedBackend,
    SemanticCache,
    cached,
    default_embedder,
    default_verifier,
)


class FakeClient:
    """Answers like a chat completion endpoint and counts how often it is called."""

    calls = 0

    def complete(self, *, model: str, messages: list[dict[str, str]], **params: Any) -> Any:
        FakeClient.calls += 1
        question = messages[-1]["content"]
        return {
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "content": f"Answer #{self.calls}: {question}",
                    },
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 20},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", help="cache directory (default: a temporary one)")
    args = parser.parse_args()
    client = FakeClient()
    with (
        tempfile.TemporaryDirectory() as tmp,
        SemanticCache(
            # ONNX Runtime if it works here, else torch; offline. The first run exports the
            # model (~8 s, 87 MB under ~/.cache/semcache/onnx); later starts take ~1.4 s.
            embedder=default_embedder(),  # MiniLM + the shipped LoRA adapter
            verifier=default_verifier(),  # a cross-encoder on the doubtful hits only
            backend=EmbeddedBackend(args.dir or tmp),
            policy=CachePolicy(ttl=24 * 3600, max_entries=100_000),
        ) as cache,
    ):

        @cached(cache)
        def chat(*, model: str, messages: list[dict[str, str]], **params: Any) -> Any:
            return client.complete(model=model, messages=messages, **params)

        for question in (
            "How do I reset my password?",
            "how do i reset my password",  # exact tier: normalised text
            "How can I reset my password?",  # semantic tier
            "How do I delete my account?",  # a different question: miss
        ):
            reply = chat(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
            print(f"{question!r:36} -> {reply['choices'][0]['message']['content']}")
        print(chat.cache_info())  # type: ignore[attr-defined]
        print(f"upstream calls: {FakeClient.calls}")


if __name__ == "__main__":
    main()
