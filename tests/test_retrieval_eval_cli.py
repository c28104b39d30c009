"""``semcache eval retrieval`` on a tiny BEIR folder cut from SciFact (tests/data, train split)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from semcache.cli import main
from semcache.errors import ConfigurationError
from semcache.measure.beir import load_beir


def _tiny_beir(data: Path, out: Path, n_queries: int = 6, distractors: int = 14) -> Path:
    """The first judged train queries of SciFact, their documents and some distractors."""
    src = data / "beir-scifact"
    with (src / "qrels" / "train.tsv").open() as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    qids: list[str] = []
    for qid, _, _ in rows:
        if qid not in qids:
            qids.append(qid)
        if len(qids) == n_queries:
            break
    qrels = [r for r in rows if r[0] in qids]
    wanted = {r[1] for r in qrels}
    corpus = []
    with (src / "corpus.jsonl").open() as f:
        for line in f:
            rec = json.loads(line)
            if rec["_id"] in wanted or len(corpus) < distractors:
                rec["text"] = rec["text"][:500]
                corpus.append(rec)
    with (src / "queries.jsonl").open() as f:
        queries = [json.loads(line) for line in f]
    (out / "qrels").mkdir(parents=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (out / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in queries if q["_id"] in qids)
    )
    with (out / "qrels" / "train.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    return out


def test_load_beir_reads_headers_and_picks_the_split(test_data: Path, tmp_path: Path) -> None:
    folder = _tiny_beir(test_data, tmp_path / "tiny")
    ds = load_beir(folder)
    assert ds.split == "train"
    assert len(ds.queries) == 6
    assert all(doc in {d.id for d in ds.corpus} for rels in ds.qrels.values() for doc in rels)
    with pytest.raises(ConfigurationError, match=r"no qrels/test\.tsv"):
        load_beir(folder, "test")
    graded = load_beir(test_data / "msmarco-trecdl-tiny")  # no header, graded 1-3
    assert len(graded.queries) == 5  # of 7: the 2 queries without judgements are dropped
    assert max(g for rels in graded.qrels.values() for g in rels.values()) == 3


@pytest.mark.model
@pytest.mark.slow
def test_eval_retrieval_prints_every_mode(
    test_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _tiny_beir(test_data, tmp_path / "tiny")
    assert main(["eval", "retrieval", str(folder), "--quiet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    modes = {m["name"]: m for m in result["modes"]}
    assert set(modes) == {
        "bm25",
        "dense-fp32",
        "dense-int8-rescored",
        "binary-int8-fp32",
        "hybrid-rrf",
        "hybrid-weighted",
        "hybrid-adaptive",
    }
    for m in modes.values():
        assert 0.0 < m["ndcg_at_10"] <= 1.0
        assert 0.0 < m["recall_at_100"] <= 1.0
        # Each mode against the better single retriever: a seeded paired bootstrap interval.
        assert m["vs_best_low"] <= m["vs_best"] <= m["vs_best_high"]
    best = modes[result["best_single"]]
    assert result["best_single"] in {"bm25", "dense-fp32", "dense-int8-rescored"}
    assert best["ndcg_at_10"] == max(
        modes[n]["ndcg_at_10"] for n in ("bm25", "dense-fp32", "dense-int8-rescored")
    )
    assert best["vs_best"] == best["vs_best_low"] == best["vs_best_high"] == 0.0
    for name, m in modes.items():
        assert m["vs_best"] == pytest.approx(m["ndcg_at_10"] - best["ndcg_at_10"]), name
    assert modes["dense-fp32"]["ram_bytes_per_vector"] == 1536
    assert modes["dense-int8-rescored"]["ram_bytes_per_vector"] == 384
    assert modes["dense-int8-rescored"]["disk_bytes_per_vector"] == 384
    assert modes["binary-int8-fp32"]["ram_bytes_per_vector"] == 48
    # Dense search ranks every document of a 20-document corpus: Recall@100 is complete.
    assert modes["dense-fp32"]["recall_at_100"] == pytest.approx(1.0)
    assert main(["eval", "retrieval", str(folder), "--quiet", "--max-queries", "2"]) == 0
    table = capsys.readouterr().out
    assert "nDCG@10" in table
    assert "hybrid-rrf" in table
    assert "vs best (95% CI)" in table
    assert main(["eval", "retrieval", str(folder), "--quiet", "--json", "--seed", "3"]) == 0
    again = {m["name"]: m for m in json.loads(capsys.readouterr().out)["modes"]}
    assert main(["eval", "retrieval", str(folder), "--quiet", "--json", "--seed", "3"]) == 0
    third = {m["name"]: m for m in json.loads(capsys.readouterr().out)["modes"]}
    for name in again:  # seeded: the same interval on a rerun
        assert again[name]["vs_best_low"] == third[name]["vs_best_low"]
        assert again[name]["vs_best_high"] == third[name]["vs_best_high"]
    assert main(["eval", "retrieval", str(tmp_path / "missing"), "--quiet"]) == 2
