"""Cut the small test fixtures in tests/data/ from the full evaluation data (run by hand).

    python tests/data/make_fixtures.py [SOURCE]

SOURCE is the full data folder, by default ``../shared/data`` beside the repository root. The
output is deterministic: the same source gives byte-identical fixtures. Rows are copied as they
are (byte-for-byte lines), in the source's order; the only change is that SciFact document texts
are cut to 500 characters (no test reads more). See README.md beside this script.

Not a test module: pytest collects ``test_*.py`` only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "data"

QQP_PREFIX = 320  # the most any test reads from the start of the file (tune's time budget test)
QQP_GROUPS = 10  # extra: whole groups of pairs linked by a shared question
PAWS_ROWS = 100
STSB_PER_SOURCE = 50  # per text source, images and track5.en-en (CC BY-SA texts)
SCIFACT_DOCS = 600  # the quantization test's first 600 titles
SCIFACT_QUERIES = 60  # and its first 60 claims
SCIFACT_TEXT_CHARS = 500  # _tiny_beir keeps 500 characters, the Redis parity test 400
MSMARCO_QUERIES = 5  # judged queries, first in qrels order
MSMARCO_PER_GRADE = 2  # judged passages per query and grade, first in qrels order
MSMARCO_UNJUDGED = 2  # queries without judgements (load_beir must drop them)
MSMARCO_DISTRACTORS = 10  # passages judged for no query


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(data)
    return buf.getvalue()


def qqp(src: Path, out: Path) -> None:
    """The first pairs, then whole groups of 3-6 pairs sharing questions, with both labels."""
    lines = _lines(gzip.decompress((src / "qqp" / "pairs.jsonl.gz").read_bytes()))
    rows = [json.loads(line) for line in lines]
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in rows:
        a, b = find(r["text_a"]), find(r["text_b"])
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        members.setdefault(find(r["text_a"]), []).append(i)
    prefix_groups = {find(r["text_a"]) for r in rows[:QQP_PREFIX]}
    groups = [
        idx
        for key, idx in members.items()
        if key not in prefix_groups
        and 3 <= len(idx) <= 6
        and len({rows[i]["label"] for i in idx}) == 2
    ]
    groups.sort(key=min)
    keep = set(range(QQP_PREFIX)) | {i for idx in groups[:QQP_GROUPS] for i in idx}
    _write(out / "qqp" / "pairs.jsonl.gz", _gzip(b"".join(lines[i] for i in sorted(keep))))
    shutil.copyfile(src / "qqp" / "LICENSE.GPTCache", out / "qqp" / "LICENSE.GPTCache")


def paws(src: Path, out: Path) -> None:
    """The header and the first rows of dev.tsv, CRLF kept."""
    lines = _lines((src / "paws-wiki" / "dev.tsv").read_bytes())
    _write(out / "paws-wiki" / "dev.tsv", b"".join(lines[: 1 + PAWS_ROWS]))
    shutil.copyfile(src / "paws-wiki" / "LICENSE.PAWS", out / "paws-wiki" / "LICENSE.PAWS")


def stsb(src: Path, out: Path) -> None:
    """The first dev rows of the images and track5.en-en sources (texts under CC BY-SA)."""
    lines = _lines((src / "stsb" / "sts-dev.csv").read_bytes())
    taken: dict[bytes, int] = {b"images": 0, b"track5.en-en": 0}
    keep = []
    for line in lines:
        source = line.split(b"\t")[1]
        if source in taken and taken[source] < STSB_PER_SOURCE:
            taken[source] += 1
            keep.append(line)
    _write(out / "stsb" / "sts-dev.csv", b"".join(keep))
    shutil.copyfile(src / "stsb" / "LICENSE.txt", out / "stsb" / "LICENSE.txt")


def _qrels(path: Path, header: bool) -> tuple[list[bytes], list[tuple[list[str], bytes]]]:
    """(header lines, [(fields, raw line)]): lines are copied as they are."""
    lines = _lines(path.read_bytes())
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    return head, [(line.decode().rstrip("\r\n").split("\t"), line) for line in body]


def scifact(src: Path, out: Path) -> None:
    """The first documents and claims, the claims' train qrels and their documents."""
    base = src / "beir-scifact"
    queries = _lines((base / "queries.jsonl").read_bytes())[:SCIFACT_QUERIES]
    qids = {json.loads(q)["_id"] for q in queries}
    head, qrels = _qrels(base / "qrels" / "train.tsv", header=True)
    qrels = [(r, line) for r, line in qrels if r[0] in qids]
    wanted = {r[1] for r, _ in qrels}
    corpus = []
    for i, line in enumerate(_lines((base / "corpus.jsonl").read_bytes())):
        rec = json.loads(line)
        if i < SCIFACT_DOCS or rec["_id"] in wanted:
            rec["text"] = rec["text"][:SCIFACT_TEXT_CHARS]
            corpus.append(json.dumps(rec).encode() + b"\n")
    dst = out / "beir-scifact"
    _write(dst / "corpus.jsonl", b"".join(corpus))
    _write(dst / "queries.jsonl", b"".join(queries))
    _write(dst / "qrels" / "train.tsv", b"".join(head + [line for _, line in qrels]))


def msmarco(src: Path, out: Path) -> None:
    """A few judged queries with passages of each grade, unjudged queries, distractors."""
    base = src / "msmarco-trecdl-subset-5k"
    _, qrels = _qrels(base / "qrels" / "test.tsv", header=False)
    judged: list[str] = []
    for (qid, _, _), _ in qrels:
        if qid not in judged:
            judged.append(qid)
    chosen = set(judged[:MSMARCO_QUERIES])
    per: dict[tuple[str, str], int] = {}
    kept = []
    for (qid, doc, grade), line in qrels:
        if qid in chosen and per.get((qid, grade), 0) < MSMARCO_PER_GRADE:
            per[(qid, grade)] = per.get((qid, grade), 0) + 1
            kept.append((doc, line))
    queries = []
    unjudged = 0
    for line in _lines((base / "queries.jsonl").read_bytes()):
        qid = json.loads(line)["_id"]
        if qid in chosen or (qid not in judged and unjudged < MSMARCO_UNJUDGED):
            unjudged += qid not in judged
            queries.append(line)
    docs = {d for d, _ in kept}
    all_judged = {r[1] for r, _ in qrels}
    corpus = []
    distractors = 0
    for line in _lines((base / "corpus.jsonl").read_bytes()):
        doc = json.loads(line)["_id"]
        if doc in docs or (doc not in all_judged and distractors < MSMARCO_DISTRACTORS):
            distractors += doc not in all_judged
            corpus.append(line)
    dst = out / "msmarco-trecdl-tiny"
    _write(dst / "corpus.jsonl", b"".join(corpus))
    _write(dst / "queries.jsonl", b"".join(queries))
    _write(dst / "qrels" / "test.tsv", b"".join(line for _, line in kept))


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else DEFAULT_SOURCE
    if not src.is_dir():
        print(f"source data not found: {src}", file=sys.stderr)
        return 2
    for make in (qqp, paws, stsb, scifact, msmarco):
        make(src, HERE)
    for path in sorted(HERE.rglob("*")):
        if path.is_file() and path.suffix not in {".py", ".md"}:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            print(f"{path.relative_to(HERE)}  {path.stat().st_size:>7} B  sha256 {digest}…")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
