"""First stage: BM25 over title + text with `bm25s`."""

from __future__ import annotations

from .data import RetrievalData, Run


def _stemmer(name: str | None):
    if not name:
        return None
    try:
        import Stemmer  # PyStemmer
    except ImportError as error:
        raise ImportError("BM25 stemming needs PyStemmer: pip install PyStemmer") from error
    return Stemmer.Stemmer(name)


def bm25_run(
    data: RetrievalData,
    top_k: int = 100,
    k1: float = 1.5,
    b: float = 0.75,
    method: str = "lucene",
    stemmer: str | None = None,
    stopwords: str | None = "en",
    show_progress: bool = True,
    candidates: dict[str, list[str]] | None = None,
) -> Run:
    """BM25 (bm25s, Lucene variant by default) over each document's title + text; the `top_k` best per query.

    The defaults (k1=1.5, b=0.75, English stopwords, no stemming) give NDCG@10 0.662 on BEIR SciFact test.
    With `candidates` (query id -> doc ids), each query's candidates are scored instead of retrieving from
    the whole corpus (IDF still comes from the whole corpus): a first stage for fixed candidate lists.
    """
    import bm25s
    from bm25s.tokenization import Tokenizer

    doc_ids = sorted(data.corpus)
    tokenizer = Tokenizer(stopwords=stopwords, stemmer=_stemmer(stemmer))
    corpus_tokens = tokenizer.tokenize([data.doc_text(d) for d in doc_ids], show_progress=show_progress, return_as="tuple")
    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index(corpus_tokens, show_progress=show_progress)
    query_ids = list(data.queries)
    query_tokens = tokenizer.tokenize(
        [data.queries[q] for q in query_ids], update_vocab=False, show_progress=False, return_as="ids"
    )
    if candidates is not None:
        position = {d: i for i, d in enumerate(doc_ids)}
        run = {}
        for qid, tokens in zip(query_ids, query_tokens):
            scores = retriever.get_scores(tokens) if tokens else None
            docs = candidates.get(qid, [])
            run[qid] = {d: (float(scores[position[d]]) if scores is not None else 0.0) for d in docs}
        return run
    k = min(top_k, len(doc_ids))
    docs, scores = retriever.retrieve(query_tokens, k=k, show_progress=show_progress, n_threads=1)
    run: Run = {}
    for row, qid in enumerate(query_ids):
        run[qid] = {doc_ids[int(j)]: float(s) for j, s in zip(docs[row], scores[row])}
    return run
