"""Tuning end to end on a small slice of QQP: train, save, reload, report before/after."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semcache import SentenceTransformerEmbedder
from semcache.cli import main
from semcache.errors import ConfigurationError, InvalidInputError
from semcache.measure.calibration import pair_similarities
from semcache.measure.pairs import LabelledPair, pair_groups, read_pairs
from semcache.measure.tuning import TUNING_FILE, TuneConfig, holdout_split, tune_embedder


def test_config_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="epochs"):
        TuneConfig(epochs=0)
    with pytest.raises(ConfigurationError, match="time_budget"):
        TuneConfig(time_budget=-1)
    with pytest.raises(ConfigurationError, match="mnrl and contrastive"):
        TuneConfig(mnrl=False, contrastive=False)
    with pytest.raises(ConfigurationError, match="lora_rank"):
        TuneConfig(resume_from=Path("adapter.safetensors"))


def test_holdout_split_is_fixed_and_disjoint() -> None:
    pairs = [LabelledPair(f"a{i}", f"b{i}", i % 2 == 0) for i in range(1000)]
    train, held = holdout_split(pairs, 0.2)
    assert (train, held) == holdout_split(pairs, 0.2)
    assert len(train) + len(held) == 1000
    assert 150 < len(held) < 250
    assert not {p.text_a for p in train} & {p.text_a for p in held}


def test_holdout_split_keeps_shared_texts_on_one_side() -> None:
    # PAWS-style: each source sentence reappears in several pairs, some chained through others
    pairs = [LabelledPair(f"s{i}", f"s{i} v{j}", j % 2 == 0) for i in range(300) for j in range(4)]
    pairs += [LabelledPair(f"s{i} v0", f"s{i + 1}", False) for i in range(0, 300, 3)]
    order = list(reversed(pairs))
    train, held = holdout_split(pairs, 0.3)
    assert 0 < len(held) < len(pairs)
    seen = {t for p in train for t in (p.text_a, p.text_b)}
    assert not seen & {t for p in held for t in (p.text_a, p.text_b)}
    # the same split whatever the order of the pairs
    train2, held2 = holdout_split(order, 0.3)
    assert set(held2) == set(held)
    assert set(train2) == set(train)


def test_holdout_split_refuses_pairs_that_are_all_one_group() -> None:
    star = [LabelledPair("hub question", f"spoke {i}", i % 2 == 0) for i in range(100)]
    with pytest.raises(InvalidInputError, match="too few groups"):
        holdout_split(star, 0.2)


def test_pair_groups_follow_chains() -> None:
    pairs = [LabelledPair("b", "c", True), LabelledPair("x", "y", False),
             LabelledPair("a", "c", False), LabelledPair("y", "z", True)]  # fmt: skip
    assert pair_groups(pairs) == ["a", "x", "a", "x"]


def test_too_few_pairs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="at least batch_size"):
        tune_embedder([LabelledPair("a", "b", True)], tmp_path, config=TuneConfig())


@pytest.mark.model
@pytest.mark.slow
def test_tune_cli_end_to_end_and_reload(
    test_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tuned"
    pairs = test_data / "qqp" / "pairs.jsonl.gz"
    code = main(
        ["tune", str(pairs), "--out", str(out), "--limit", "200", "--batch-size", "32",
         "--max-seq-length", "32", "--matryoshka", "128", "--threads", "1", "--no-plot",
         "--delta", "0.2"]
    )  # fmt: skip
    assert code == 0
    record = json.loads((out / TUNING_FILE).read_text())
    assert record["result"]["steps"] == record["result"]["planned_steps"] > 0
    assert record["result"]["pairs"] < 200  # the held-out part was not trained on
    summary = capsys.readouterr().out
    assert "held out" in summary
    assert "precision" in summary
    before = json.loads((out / "before.calibration.json").read_text())
    after = json.loads((out / "after.calibration.json").read_text())
    assert before["pairs"] == after["pairs"] == 200 - record["result"]["pairs"]
    assert before["delta"] == after["delta"] == 0.2
    assert "certified at delta=0.2 (tuned)" in summary

    # The saved model reloads by path and gives the same similarities as the report's.
    held = holdout_split(read_pairs(pairs, limit=200), 0.2)[1]
    first = pair_similarities(SentenceTransformerEmbedder(str(out), memo_size=0), held)
    second = pair_similarities(SentenceTransformerEmbedder(str(out), memo_size=0), held)
    np.testing.assert_allclose(first, second, rtol=0, atol=1e-6)
    base = pair_similarities(SentenceTransformerEmbedder(memo_size=0), held)
    assert not np.allclose(first, base, atol=1e-4)  # training changed the model
    labels = np.array([p.label for p in held])
    hits = next(pt for pt in after["points"] if abs(pt["threshold"] - 0.9) < 1e-9)
    assert hits["hits"] == int((first >= 0.9).sum())
    assert hits["false_hits"] == int(((first >= 0.9) & ~labels).sum())
    # Matryoshka: the first 128 dimensions load as a truncated embedder.
    small = SentenceTransformerEmbedder(str(out), truncate_dim=128, memo_size=0)
    assert small.embed(["a question"]).shape == (1, 128)


@pytest.mark.model
def test_time_budget_stops_gracefully(test_data: Path, tmp_path: Path) -> None:
    pairs = read_pairs(test_data / "qqp" / "pairs.jsonl.gz", limit=320)
    config = TuneConfig(
        batch_size=16, max_seq_length=32, time_budget=0.01, threads=1, progress=False
    )
    result = tune_embedder(pairs, tmp_path / "m", config=config)
    assert result.stopped_by_budget
    assert result.steps == 1 < result.planned_steps == 20
    assert (tmp_path / "m" / "config.json").is_file()


@pytest.mark.model
@pytest.mark.slow
def test_tune_cli_lora_writes_an_adapter_that_reloads(
    test_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from semcache.embedders.adapter import read_adapter

    out = tmp_path / "lora"
    pairs = test_data / "qqp" / "pairs.jsonl.gz"
    code = main(
        ["tune", str(pairs), "--out", str(out), "--limit", "120", "--batch-size", "16",
         "--max-seq-length", "32", "--threads", "1", "--no-plot", "--lora-rank", "4"]
    )  # fmt: skip
    assert code == 0
    assert not (out / "config.json").exists()  # an adapter, not a whole model
    adapter = read_adapter(out / "adapter.safetensors")
    assert adapter.rank == 4
    assert len(adapter.lora) == 36  # 6 layers x (q, k, v, attention out, intermediate, out)
    assert (out / "adapter.safetensors").stat().st_size < 400_000
    tuned = SentenceTransformerEmbedder(memo_size=0, adapter=adapter)
    assert tuned.fingerprint.variant == f"lora-{adapter.short}"
    assert "certified at delta" in capsys.readouterr().out


@pytest.mark.model
def test_a_run_resumed_from_an_adapter_starts_where_it_left_off() -> None:
    """attach_lora(start=...) loads the adapter's pairs and head: before any step, the model
    scores pairs as the adapter merged into the weights does."""
    import torch
    from sentence_transformers import CrossEncoder

    from semcache.embedders.shipped import embedder_adapter, verifier_adapter
    from semcache.matching.onnx_verifier import TorchPairScorer, _base_dir
    from semcache.measure.lora import attach_lora

    adapter = verifier_adapter()
    model = CrossEncoder(str(_base_dir()), num_labels=1, device="cpu", local_files_only=True)
    head = ("bert.pooler", "classifier")
    with pytest.raises(ConfigurationError, match="same layers"):
        attach_lora(model.model, rank=16, alpha=32.0, train_full=head, start=embedder_adapter())
    with pytest.raises(ConfigurationError, match="rank 16"):
        attach_lora(model.model, rank=8, alpha=16.0, train_full=head, start=adapter)
    lora = attach_lora(model.model, rank=16, alpha=32.0, train_full=head, start=adapter)
    model.eval()
    pairs = [("how do I reset my password", "How can I reset my password?"),
             ("flights from Paris to London", "flights from London to Paris")]  # fmt: skip
    with torch.inference_mode():
        logits = model.predict(pairs, activation_fn=torch.nn.Sigmoid(), convert_to_numpy=True)
    merged = TorchPairScorer.from_adapter(adapter).probabilities(pairs)
    np.testing.assert_allclose(np.asarray(logits, dtype=np.float32), merged, atol=1e-4)
    assert all(p.requires_grad for p in lora.parameters())
