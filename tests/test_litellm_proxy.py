"""A real LiteLLM proxy process with semcache as its cache, over real HTTP.

The proxy runs examples/litellm_proxy/config.yaml (plus two models pointing at a local fake
OpenAI-compatible upstream, two API keys from a custom-auth module, and counters headers). The
upstream counts its calls, so a hit is proven by the upstream not being called.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("litellm")
httpx = pytest.importorskip("httpx")
yaml = pytest.importorskip("yaml")

pytestmark = [pytest.mark.model, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "litellm_proxy" / "config.yaml"
LITELLM = Path(sys.executable).parent / "litellm"

# Custom auth: two API keys in two teams, so the tenant scope can be tested without a database.
AUTH_MODULE = """
import hashlib, json, os
from litellm.proxy._types import UserAPIKeyAuth

_TEAMS = json.loads(os.environ["SEMCACHE_TEST_KEYS"])

async def user_api_key_auth(request, api_key: str) -> UserAPIKeyAuth:
    if api_key not in _TEAMS:
        raise ValueError("invalid API key")
    return UserAPIKeyAuth(
        api_key=hashlib.sha256(api_key.encode()).hexdigest(), team_id=_TEAMS[api_key]
    )
"""


# -- a fake OpenAI-compatible upstream -------------------------------------------------------


@dataclass
class Upstream:
    url: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)

    def count(self) -> int:
        return len(self.calls)


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{secrets.token_hex(6)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }


def _chunks(model: str, text: str) -> Iterator[dict[str, Any]]:
    base = {"id": f"chatcmpl-{secrets.token_hex(6)}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}  # fmt: skip
    words = text.split(" ")
    for i, word in enumerate(words):
        piece = word if i == len(words) - 1 else word + " "
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


def _make_handler(upstream: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            upstream.calls.append(body)
            question = body["messages"][-1]["content"]
            text = f"Answer {len(upstream.calls)} from {body['model']}: {question}"
            if body.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for chunk in _chunks(body["model"], text):
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                return
            payload = json.dumps(_completion(body["model"], text)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    state = Upstream()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# -- the proxy -------------------------------------------------------------------------------


@dataclass
class Proxy:
    url: str
    keys: dict[str, str]
    store: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(upstream: Upstream, store: Path) -> dict[str, Any]:
    config = yaml.safe_load(EXAMPLE.read_text())
    for name in ("fake-a", "fake-b"):
        config["model_list"].append(
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{name}",
                    "api_base": upstream.url,
                    "api_key": "unused",
                },
            }
        )
    config["callback_settings"]["semcache"].update(path=str(store), debug_headers=True)
    config["general_settings"]["custom_auth"] = "semcache_test_auth.user_api_key_auth"
    return config


@pytest.fixture(scope="module")
def proxy(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    work = tmp_path_factory.mktemp("litellm_proxy")
    store = work / "store"
    (work / "config.yaml").write_text(yaml.safe_dump(_config(upstream, store)))
    (work / "semcache_test_auth.py").write_text(AUTH_MODULE)
    keys = {"alpha": "sk-" + secrets.token_hex(24), "beta": "sk-" + secrets.token_hex(24)}
    port = _free_port()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": "sk-" + secrets.token_hex(32),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SEMCACHE_TEST_KEYS": json.dumps({keys["alpha"]: "team-alpha", keys["beta"]: "team-beta"}),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    env.pop("DATABASE_URL", None)
    log = work / "proxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(LITELLM),
                "--config",
                str(work / "config.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, log)
        yield Proxy(url=url, keys=keys, store=store, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the proxy exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the proxy did not start in 120 s:\n{log.read_text()[-4000:]}")


T = TypeVar("T")


def _eventually(get: Callable[[], T], done: Callable[[T], bool], seconds: float = 10.0) -> T:
    """``get()`` until ``done`` says so or ``seconds`` pass: LiteLLM stores after it responds."""
    deadline = time.monotonic() + seconds
    value = get()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = get()
    return value


def chat(proxy: Proxy, question: str, *, key: str = "alpha", **body: Any) -> httpx.Response:
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {proxy.keys[key]}"},
        json={"model": "fake-a", "messages": [{"role": "user", "content": question}], **body},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response


def answer(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def counters(response: httpx.Response) -> dict[str, int]:
    return dict(json.loads(response.headers["x-semcache-counters"]))


# -- the tests -------------------------------------------------------------------------------


def test_paraphrase_is_a_hit(proxy: Proxy, upstream: Upstream) -> None:
    first = chat(proxy, "What is the capital of France?")
    assert first.headers["x-semcache"].startswith("miss")
    calls = upstream.count()
    second = chat(proxy, "what's the capital city of France?")
    assert upstream.count() == calls, "a hit must not call the upstream"
    assert answer(second) == answer(first)
    assert second.headers["x-semcache"].startswith("hit; tier=semantic")
    assert float(second.headers["x-litellm-semantic-similarity"]) >= 0.9
    assert second.headers["x-litellm-cache-key"]
    before, after = counters(first), counters(second)
    assert after["hits_semantic"] == before["hits_semantic"] + 1
    assert after["stores"] >= 1
    assert after["tokens_saved"] >= 21


def test_other_model_or_other_key_is_a_miss(proxy: Proxy, upstream: Upstream) -> None:
    question = "How many legs does a spider have?"
    chat(proxy, question)
    calls = upstream.count()
    other_model = chat(proxy, question, model="fake-b")
    other_key = chat(proxy, question, key="beta")
    assert upstream.count() == calls + 2
    assert other_model.headers["x-semcache"].startswith("miss")
    assert other_key.headers["x-semcache"].startswith("miss")
    assert "fake-b" in answer(other_model)
    again = chat(proxy, question, key="beta")  # and each is then cached in its own scope
    assert again.headers["x-semcache"].startswith("hit; tier=exact")


def test_generation_params_and_system_prompt_split_the_cache(
    proxy: Proxy, upstream: Upstream
) -> None:
    question = "Name a primary colour."
    chat(proxy, question, temperature=0)
    calls = upstream.count()
    assert chat(proxy, question, temperature=0).headers["x-semcache"].startswith("hit")
    assert chat(proxy, question, temperature=1).headers["x-semcache"].startswith("miss")
    system = [{"role": "system", "content": "Answer in French."}]
    in_french = chat(
        proxy, "", temperature=0, messages=[*system, {"role": "user", "content": question}]
    )
    assert in_french.headers["x-semcache"].startswith("miss")
    assert upstream.count() == calls + 2


def _stream(proxy: Proxy, question: str) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    body = {"model": "fake-a", "stream": True, "messages": [{"role": "user", "content": question}]}
    headers = {"Authorization": f"Bearer {proxy.keys['alpha']}"}
    chunks: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, headers=headers,
                      timeout=60) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[len("data: ") :]))
        return response.headers, chunks


def _streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_streaming_hit_streams(proxy: Proxy, upstream: Upstream) -> None:
    stored = answer(chat(proxy, "Who wrote the novel Moby-Dick?"))
    calls = upstream.count()
    headers, chunks = _stream(proxy, "who is the author of the novel Moby Dick?")
    assert upstream.count() == calls
    assert headers["x-semcache"].startswith("hit")
    assert len(chunks) > 1, "a hit on a stream=true request must arrive as several SSE chunks"
    assert _streamed_text(chunks) == stored


def test_streamed_answer_is_stored(proxy: Proxy, upstream: Upstream) -> None:
    headers, chunks = _stream(proxy, "What is the boiling point of water at sea level?")
    assert headers["x-semcache"].startswith("miss")
    streamed = _streamed_text(chunks)
    calls = upstream.count()
    later = _eventually(  # LiteLLM writes a streamed answer after the last chunk
        lambda: chat(proxy, "At sea level, what is the boiling point of water?"),
        lambda r: r.headers["x-semcache"].startswith("hit"),
    )
    assert later.headers["x-semcache"].startswith("hit")
    assert answer(later) == streamed
    assert upstream.count() == calls


def test_cache_controls(proxy: Proxy, upstream: Upstream) -> None:
    question = "What is the chemical symbol for gold?"
    chat(proxy, question)
    calls = upstream.count()
    skipped = chat(proxy, question, cache={"no-cache": True})
    assert skipped.headers["x-semcache"] == "bypass; reason=no-cache"
    assert upstream.count() == calls + 1

    unstored = "What is the chemical symbol for silver?"
    chat(proxy, unstored, cache={"no-store": True})
    assert chat(proxy, unstored).headers["x-semcache"].startswith("miss")

    assert (
        chat(proxy, question, cache={"namespace": "other-app"})
        .headers["x-semcache"]
        .startswith("miss")
    )
    hit = _eventually(
        lambda: chat(proxy, question, cache={"namespace": "other-app"}),
        lambda r: r.headers["x-semcache"].startswith("hit"),
    )
    assert hit.headers["x-semcache"].startswith("hit")

    chat(proxy, "What is the chemical symbol for iron?", cache={"ttl": 120})

    def ttl_row() -> tuple[float] | None:
        uri = f"file:{proxy.store / 'entries.sqlite3'}?mode=ro"
        with sqlite3.connect(uri, uri=True) as db:
            row: tuple[float] | None = db.execute(
                "SELECT expires_at - created_at FROM entries WHERE prompt = ?",
                ("What is the chemical symbol for iron?",),
            ).fetchone()
        return row

    row = _eventually(ttl_row, lambda r: r is not None)
    assert row is not None
    assert row[0] == pytest.approx(120)


def test_long_conversation_bypasses_visibly(proxy: Proxy, upstream: Upstream) -> None:
    turns: list[dict[str, str]] = []
    for i in range(9):
        turns += [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}]
    turns.append({"role": "user", "content": "And the last question?"})
    response = chat(proxy, "", messages=turns)
    assert response.headers["x-semcache"] == "bypass; reason=too_many_messages"


def test_followup_in_another_conversation_is_a_miss(proxy: Proxy, upstream: Upstream) -> None:
    question = "What is the weather in Oslo?"
    chat(proxy, question)
    messages = [
        {"role": "user", "content": "Plan a trip to Norway."},
        {"role": "assistant", "content": "Sure. Where first?"},
        {"role": "user", "content": question},
    ]
    # the same last question after other turns: the earlier turns are part of the scope
    assert chat(proxy, "", messages=messages).headers["x-semcache"].startswith("miss")


def test_tool_results_bypass(proxy: Proxy) -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}  # fmt: skip
    messages = [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C and rain"},
    ]
    response = chat(proxy, "", messages=messages)
    assert response.headers["x-semcache"] == "bypass; reason=last_message_not_user"


def test_example_demo_model_is_cached(proxy: Proxy) -> None:
    body = {"model": "demo"}
    first = chat(proxy, "Tell me the capital of France.", **body)
    assert answer(first) == "Paris is the capital of France."
    second = chat(proxy, "Can you tell me the capital of France?", **body)
    assert second.headers["x-semcache"].startswith("hit")


def test_backend_failure_still_answers(proxy: Proxy, upstream: Upstream) -> None:
    """Runs last: damages the store under the running proxy (the table disappears)."""
    with sqlite3.connect(proxy.store / "entries.sqlite3") as db:
        db.execute("DROP TABLE entries")
    calls = upstream.count()
    response = chat(proxy, "What is the capital of France?")
    assert upstream.count() == calls + 1
    assert "What is the capital of France?" in answer(response)
    assert response.headers["x-semcache"].startswith("error")
    assert counters(response)["errors"] >= 1
    assert "semcache: lookup failed" in proxy.log.read_text()
