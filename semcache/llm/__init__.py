"""The LLM-call front: the ``@cached`` decorator, request adapters, response codecs, per-call
options and request coalescing."""
