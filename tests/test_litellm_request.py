"""semcache_litellm: settings from the proxy YAML, request planning, and in-process litellm."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

litellm = pytest.importorskip("litellm")

from semcache import ConfigurationError  # noqa: E402
from semcache_litellm import LiteLLMCacheSettings, install, plan_request, tenant_of  # noqa: E402

SETTINGS = LiteLLMCacheSettings(path="/unused")


def _kwargs(**extra: Any) -> dict[str, Any]:
    return {
        "model": "openai/fake-a",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "metadata": {"model_group": "fake-a", "user_api_key": "h1", "user_api_key_team_id": "t1"},
        "litellm_call_id": "call-1",
        "stream": False,
        **extra,
    }


def test_settings_from_yaml_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMCACHE_DIR", "/data/semcache")
    raw = {"path": "os.environ/SEMCACHE_DIR", "min_similarity": "0.85", "debug_headers": "true"}
    settings = LiteLLMCacheSettings.from_mapping(raw)
    assert (settings.path, settings.min_similarity, settings.debug_headers) == (
        "/data/semcache",
        0.85,
        True,
    )
    with pytest.raises(ConfigurationError, match=r"unknown semcache setting\(s\) \['treshold'\]"):
        LiteLLMCacheSettings.from_mapping({"path": "x", "treshold": 0.9})
    with pytest.raises(ConfigurationError, match="reads \\$MISSING_VAR"):
        LiteLLMCacheSettings.from_mapping({"path": "os.environ/MISSING_VAR"})
    with pytest.raises(ConfigurationError, match="needs `path`"):
        LiteLLMCacheSettings.from_mapping({})
    with pytest.raises(ConfigurationError, match=r"\[-1, 1\]"):
        LiteLLMCacheSettings.from_mapping({"path": "x", "min_similarity": 1.5})
    with pytest.raises(ConfigurationError, match="tenant must be one of"):
        LiteLLMCacheSettings.from_mapping({"path": "x", "tenant": "everyone"})


def test_internal_keys_never_split_the_scope() -> None:
    a = plan_request(_kwargs(), SETTINGS)
    b = plan_request(_kwargs(litellm_call_id="call-2", stream=True, api_key="sk-x"), SETTINGS)
    assert not a.bypass
    assert a.text == "What is the capital of France?"
    assert a.scope.key() == b.scope.key()
    assert a.scope.model == "fake-a"  # the public model group, not the deployment
    for changed in ({"temperature": 0.7}, {"seed": 1}, {"tools": [{"type": "function"}]}):
        assert plan_request(_kwargs(**changed), SETTINGS).scope.key() != a.scope.key(), changed


def test_tenants_and_namespaces() -> None:
    meta = {"user_api_key": "h1", "user_api_key_team_id": "t1", "user_api_key_end_user_id": "u"}
    assert tenant_of({"metadata": meta}, "key") == "key=h1|team=t1"
    assert tenant_of({"metadata": meta}, "team") == "team=t1"
    assert tenant_of({"metadata": meta}, "end_user") == "end_user=u|key=h1|team=t1"
    assert tenant_of({"litellm_params": {"metadata": meta}}, "key") == "key=h1|team=t1"
    other_key = _kwargs(metadata={"model_group": "fake-a", "user_api_key": "h2"})
    assert (
        plan_request(other_key, SETTINGS).scope.key()
        != plan_request(_kwargs(), SETTINGS).scope.key()
    )
    spaced = plan_request(_kwargs(cache={"namespace": "app"}), SETTINGS)
    assert spaced.scope.namespace == "app"


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([], "no_messages"),
        ([{"role": "assistant", "content": "hi"}], "last_message_not_user"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            "non_text_content",
        ),
        ([{"role": "user", "content": f"q{i}"} for i in range(17)], "too_many_messages"),
    ],
)
def test_bypass_reasons(messages: list[dict[str, Any]], reason: str) -> None:
    assert plan_request(_kwargs(messages=messages), SETTINGS).bypass == reason


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Any]:
    handler = install({"path": str(tmp_path / "store"), "min_similarity": 0.9})
    try:
        yield handler
    finally:
        litellm.disable_cache()
        handler.cache.close()


@pytest.mark.model
@pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning")
async def test_acompletion_in_process(installed: Any) -> None:
    """``install`` also serves ``litellm.acompletion`` outside the proxy."""
    ask = {"model": "openai/fake", "api_key": "unused", "mock_response": "Paris."}
    first = await litellm.acompletion(
        messages=[{"role": "user", "content": "What is the capital of France?"}], **ask
    )
    for _ in range(50):  # LiteLLM writes the cache in a background task
        if installed.cache.info().stores:
            break
        await asyncio.sleep(0.1)
    second = await litellm.acompletion(
        messages=[{"role": "user", "content": "what's the capital city of France?"}],
        **{**ask, "mock_response": "a different answer"},
    )
    assert second.choices[0].message.content == first.choices[0].message.content == "Paris."
    assert installed.cache.info().hits_semantic == 1


def test_tags_come_from_the_cache_control() -> None:
    from semcache import InvalidInputError
    from semcache_litellm import tags_of

    assert tags_of({"cache": {"tags": ["b", "a"]}}) == ("a", "b")
    assert tags_of({}) == ()
    with pytest.raises(InvalidInputError):
        tags_of({"cache": {"tags": "faq"}})


@pytest.mark.model
@pytest.mark.parametrize("tuned", [True, False])
def test_default_cache_uses_the_shipped_matcher_unless_untuned(tmp_path: Path, tuned: bool) -> None:
    from semcache.embedders.shipped import EMBEDDER
    from semcache_litellm.proxy import build_semantic_cache

    settings = LiteLLMCacheSettings.from_mapping({"path": str(tmp_path), "tuned": tuned})
    with build_semantic_cache(settings) as cache:
        variant = cache.embedder.fingerprint.variant
        assert (variant == f"lora-{EMBEDDER.sha256[:12]}") is tuned
        assert (cache.verifier is not None) is tuned
