"""A real LiteLLM proxy process with semcache as its cache, over real HTTP.

The proxy runs examples/litellm_proxy/config.yaml (plus two models pointing at a local fake
OpenAI-compatible upstream, three API keys from a custom-auth module, and counters headers). The
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
from concurrent.futures import ThreadPoolExecutor
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

# Custom auth: three API keys (alpha and gamma in one team, beta in another), so the tenant scope
# can be tested without a database (LiteLLM's virtual keys need one). Each key authenticates as
# its own SHA-256 hash, as LiteLLM's virtual keys do.
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

SLOW_UPSTREAM = 2.0  # seconds the upstream takes to answer a question containing "slowly"


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
            if "slowly" in question:  # long enough for concurrent requests to all look up first
                time.sleep(SLOW_UPSTREAM)
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
    # A generous lookup budget: these tests check routing and headers on a loaded 2-core CI
    # machine, where a 0.5 s budget can run out; the budget is tested in test_budgets.py.
    config["callback_settings"]["semcache"].update(
        path=str(store), debug_headers=True, lookup_budget=10
    )
    config["general_settings"]["custom_auth"] = "semcache_test_auth.user_api_key_auth"
    return config


@pytest.fixture(scope="module")
def proxy(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    work = tmp_path_factory.mktemp("litellm_proxy")
    store = work / "store"
    (work / "config.yaml").write_text(yaml.safe_dump(_config(upstream, store)))
    (work / "semcache_test_auth.py").write_text(AUTH_MODULE)
    keys = {name: "sk-" + secrets.token_hex(24) for name in ("alpha", "beta", "gamma")}
    teams = {keys["alpha"]: "team-alpha", keys["beta"]: "team-beta", keys["gamma"]: "team-alpha"}
    port = _free_port()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": "sk-" + secrets.token_hex(32),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SEMCACHE_TEST_KEYS": json.dumps(teams),
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


def chat(
    proxy: Proxy,
    question: str,
    *,
    key: str = "alpha",
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {proxy.keys[key]}", **(headers or {})},
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
    headers, chunks = _stream(proxy, "Who wrote the book Moby-Dick?")
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


def _rows(proxy: Proxy, prompt: str) -> list[tuple[str, float]]:
    uri = f"file:{proxy.store / 'entries.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        rows = db.execute("SELECT response, created_at FROM entries WHERE prompt = ?", (prompt,))
        return [(str(r), float(c)) for r, c in rows.fetchall()]


def test_entry_older_than_s_maxage_is_a_stale_miss(proxy: Proxy, upstream: Upstream) -> None:
    question = "What is the tallest mountain on Earth?"
    first = chat(proxy, question)
    assert first.headers["x-semcache"].startswith("miss")
    assert not first.headers.get("x-litellm-cache-key"), "LiteLLM sets it on hits only"
    _eventually(lambda: _rows(proxy, question), bool)
    young = chat(proxy, question, cache={"s-maxage": 3600})
    assert young.headers["x-semcache"].startswith("hit; tier=exact")
    assert answer(young) == answer(first)

    hour_ago = time.time() - 3600  # age the entry: LiteLLM's timestamp and semcache's clock
    with sqlite3.connect(proxy.store / "entries.sqlite3") as db:
        db.execute(
            "UPDATE entries SET response = json_set(response, '$.timestamp', ?), created_at = ? "
            "WHERE prompt = ?",
            (hour_ago, hour_ago, question),
        )
    calls, before = upstream.count(), counters(young)
    stale = chat(proxy, question, cache={"s-maxage": 60})
    assert upstream.count() == calls + 1, "a stale entry must not be served"
    assert stale.headers["x-semcache"].startswith("miss")
    assert "reason=stale" in stale.headers["x-semcache"]
    assert answer(stale) != answer(first)
    after = counters(stale)
    for name in ("hits_exact", "hits_semantic", "tokens_saved"):
        assert after[name] == before[name], f"{name} counted a hit that was not served"
    assert after["misses"] == before["misses"] + 1

    # the fresh answer replaced the stale entry (same scope and text), so a plain request gets it
    rows = _eventually(lambda: _rows(proxy, question), lambda r: r[0][1] > hour_ago + 1)
    assert len(rows) == 1
    assert rows[0][1] > hour_ago + 1
    calls = upstream.count()
    plain = chat(proxy, question)
    assert plain.headers["x-semcache"].startswith("hit; tier=exact")
    assert answer(plain) == answer(stale)
    assert upstream.count() == calls


def test_concurrent_identical_misses_each_go_upstream(proxy: Proxy, upstream: Upstream) -> None:
    """The proxy does not coalesce (docs/integrations.md): N concurrent copies of a new question
    all miss and make N upstream calls; the answers are stored as one entry, served next."""
    question, copies = "Please answer slowly: what is the speed of light?", 8
    calls = upstream.count()
    with ThreadPoolExecutor(copies) as pool:
        responses = list(pool.map(lambda _: chat(proxy, question), range(copies)))
    assert upstream.count() == calls + copies
    assert all(r.headers["x-semcache"].startswith("miss") for r in responses)
    rows = _eventually(lambda: _rows(proxy, question), lambda r: len(r) == 1, seconds=5)
    assert len(rows) == 1, "each store replaced the previous one (same scope and text)"
    later = chat(proxy, question)
    assert later.headers["x-semcache"].startswith("hit; tier=exact")
    assert upstream.count() == calls + copies


def test_cache_control_header_no_cache(proxy: Proxy, upstream: Upstream) -> None:
    question = "What is the chemical symbol for copper?"
    chat(proxy, question)
    _eventually(lambda: _rows(proxy, question), bool)
    calls = upstream.count()
    skipped = chat(proxy, question, headers={"Cache-Control": "no-cache"})
    assert skipped.headers["x-semcache"] == "bypass; reason=no-cache"
    assert upstream.count() == calls + 1
    assert chat(proxy, question).headers["x-semcache"].startswith("hit")
    assert upstream.count() == calls + 1


def test_keys_of_one_team_do_not_share_entries(proxy: Proxy, upstream: Upstream) -> None:
    """``tenant: key``: alpha and gamma are two keys of the same team; neither sees the other's
    entries, each sees its own."""
    question = "How many moons does Mars have?"
    chat(proxy, question, key="alpha")
    _eventually(lambda: _rows(proxy, question), bool)
    calls = upstream.count()
    other = chat(proxy, question, key="gamma")
    assert other.headers["x-semcache"].startswith("miss")
    assert upstream.count() == calls + 1
    own = chat(proxy, "how many moons does Mars have", key="alpha")
    assert own.headers["x-semcache"].startswith("hit")
    assert upstream.count() == calls + 1


def test_install_is_logged(proxy: Proxy) -> None:
    line = next(
        (ln for ln in proxy.log.read_text().splitlines() if "installed as litellm.cache" in ln),
        "",
    )
    assert "semcache.litellm:INFO" in line
    assert f"store {proxy.store}" in line
    assert "min_similarity 0.9," in line
    assert line.endswith("entries)")


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
