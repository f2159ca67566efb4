"""Reading evaluation data: BEIR folders, candidate-list JSONL files (TrecQA style) and TREC run files.

Everything is turned into one shape, `RetrievalData`: a corpus (doc id -> title/text), queries (query id ->
text) and relevance judgements (query id -> doc id -> grade). A first-stage ranking is a *run*: query id ->
doc id -> score (higher is better), as in the TREC run format.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def beir_doc_text(doc: dict) -> str:
    """A BEIR document's text as rerankers read it: title and body joined by a space (BEIR's convention)."""
    return f"{doc.get('title') or ''} {doc.get('text') or ''}".strip()


@dataclass
class RetrievalData:
    """A retrieval test collection.

    Attributes:
        name: a short name for reports.
        corpus: doc id -> {"title": str, "text": str}.
        queries: query id -> query text (only the queries to evaluate).
        qrels: query id -> doc id -> relevance grade (0 = judged non-relevant).
        candidates: fixed candidate sets shipped with the data (candidate-list files), else None. Their
            file order is kept as scores (first = highest) but is NOT used as a first stage: TrecQA files
            list the positives first, so that order leaks the labels.
    """

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: Qrels
    candidates: Run | None = None
    meta: dict = field(default_factory=dict)

    def doc_text(self, doc_id: str) -> str:
        """The text a reranker reads for a document: title and body joined by a space (BEIR's convention)."""
        return beir_doc_text(self.corpus[doc_id])

    def subset(self, max_queries: int | None) -> RetrievalData:
        """The first `max_queries` queries (in sorted id order), for quick runs."""
        if max_queries is None or max_queries >= len(self.queries):
            return self
        keep = sorted(self.queries)[:max_queries]
        return RetrievalData(
            name=self.name,
            corpus=self.corpus,
            queries={q: self.queries[q] for q in keep},
            qrels={q: self.qrels[q] for q in keep if q in self.qrels},
            candidates=None if self.candidates is None else {q: self.candidates[q] for q in keep if q in self.candidates},
            meta=dict(self.meta, max_queries=max_queries),
        )


def read_jsonl(path: str | os.PathLike):
    """Yield the JSON objects of a JSON-lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None


def read_qrels(path: str | os.PathLike) -> Qrels:
    """A BEIR qrels TSV (`query-id  corpus-id  score`, header optional) or a TREC qrels file (4 columns)."""
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 4:  # TREC: qid iter docid rel
                qid, _, doc, grade = parts
            elif len(parts) == 3:
                qid, doc, grade = parts
            else:
                raise ValueError(f"{path}:{number}: expected 3 (BEIR) or 4 (TREC) columns, got {len(parts)}")
            try:
                value = int(float(grade))
            except ValueError:
                if number == 1:
                    continue  # header line
                raise ValueError(f"{path}:{number}: relevance {grade!r} is not a number") from None
            qrels.setdefault(qid, {})[doc] = value
    return qrels


def load_beir(folder: str | os.PathLike, split: str = "test", name: str | None = None) -> RetrievalData:
    """A BEIR-layout folder: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.

    Only queries with at least one relevant document in the split are kept (BEIR's convention).
    """
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {folder} is not a BEIR folder with a {split!r} split")
    corpus = {
        str(doc["_id"]): {"title": doc.get("title") or "", "text": doc.get("text") or ""}
        for doc in read_jsonl(folder / "corpus.jsonl")
    }
    all_queries = {str(q["_id"]): q["text"] for q in read_jsonl(folder / "queries.jsonl")}
    qrels = {q: docs for q, docs in read_qrels(qrels_path).items() if any(v > 0 for v in docs.values())}
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise ValueError(f"{qrels_path}: {len(missing)} judged queries are missing from queries.jsonl, e.g. {missing[:3]}")
    queries = {q: all_queries[q] for q in sorted(qrels)}
    return RetrievalData(name=name or folder.name, corpus=corpus, queries=queries, qrels=qrels, meta={"split": split})


def load_candidates(path: str | os.PathLike, name: str | None = None, require_both: bool = True) -> RetrievalData:
    """A candidate-list JSONL file: `{"qid", "query", "candidates": [{"text", "label"}]}` per line (TrecQA).

    Each candidate becomes a document `<qid>#<i>`; the given order becomes the candidate run (first =
    best). With `require_both` (the TrecQA convention), only questions with at least one positive and one
    negative candidate are kept.
    """
    path = Path(path)
    corpus: dict[str, dict[str, str]] = {}
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    candidates: Run = {}
    dropped = 0
    for number, item in enumerate(read_jsonl(path), start=1):
        try:
            qid, query, cands = str(item["qid"]), item["query"], item["candidates"]
        except (KeyError, TypeError):
            raise ValueError(f'{path}:{number}: expected {{"qid", "query", "candidates"}}') from None
        labels = [int(c.get("label", 0)) for c in cands]
        if require_both and not (any(v > 0 for v in labels) and any(v <= 0 for v in labels)):
            dropped += 1
            continue
        queries[qid] = query
        qrels[qid] = {}
        candidates[qid] = {}
        for i, (cand, label) in enumerate(zip(cands, labels)):
            doc_id = f"{qid}#{i}"
            corpus[doc_id] = {"title": cand.get("title") or "", "text": cand["text"]}
            qrels[qid][doc_id] = max(label, 0)
            candidates[qid][doc_id] = float(len(cands) - i)
    return RetrievalData(
        name=name or path.stem, corpus=corpus, queries=queries, qrels=qrels, candidates=candidates,
        meta={"file": str(path), "dropped_queries": dropped},
    )


def load_dataset(path: str | os.PathLike, split: str = "test", name: str | None = None) -> RetrievalData:
    """A BEIR folder or a candidate-list JSONL file, whichever `path` is."""
    path = Path(path)
    if path.is_dir():
        return load_beir(path, split=split, name=name)
    if path.is_file():
        return load_candidates(path, name=name)
    raise FileNotFoundError(f"{path}: no such BEIR folder or candidate-list file")


def read_run(path: str | os.PathLike) -> Run:
    """A TREC run file: `qid Q0 docid rank score tag` per line."""
    run: Run = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{number}: a TREC run line has 6 columns (qid Q0 docid rank score tag)")
            qid, _, doc, _, score, _ = parts
            run.setdefault(qid, {})[doc] = float(score)
    return run


def write_run(run: Run, path: str | os.PathLike, tag: str = "gliclass-rerank") -> None:
    """Write a run in TREC format, each query's documents by decreasing score."""
    tag = "".join(c if not c.isspace() else "_" for c in tag) or "run"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda item: (-item[1], item[0]))
            handle.writelines(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n" for rank, (doc, score) in enumerate(ranked, start=1))


def top_k(run: Run, k: int) -> dict[str, list[str]]:
    """Each query's `k` best documents, best first (ties broken by doc id)."""
    return {
        qid: [doc for doc, _ in sorted(docs.items(), key=lambda item: (-item[1], item[0]))[:k]]
        for qid, docs in run.items()
    }


def write_tsv(rows: list[dict], path: str | os.PathLike) -> None:
    """Write dictionaries as a tab-separated file with a header."""
    if not rows:
        return
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
