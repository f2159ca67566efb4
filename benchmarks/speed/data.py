"""Workloads for the speed benchmark, built from real text in `../shared/data` (never copied into the repo).

- long passages: BEIR SciFact abstracts cut at a word boundary to ~200 WordPiece tokens (all-MiniLM tokenizer);
- short passages: TrecQA answer-candidate sentences (~30 tokens);
- queries / claims: SciFact claims (~19 tokens), TrecQA questions for W3.

Every passage string in a workload is distinct (a token-id cache must not make repeats look cheap).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..common import DATA_ROOT


@dataclass
class Workload:
    name: str
    description: str
    queries: list[
        str
    ]  # one per group (W5: the passages/premises' claims are in `claims`)
    passages: list[
        list[str]
    ]  # passages per query (W5: the premises, one list of 1 per premise)
    unit: str = "passages"  # what throughput counts
    claims: list[list[str]] = field(default_factory=list)  # W5 only: claims per premise

    @property
    def n_units(self) -> int:
        if self.claims:
            return sum(len(c) for c in self.claims)
        return sum(len(p) for p in self.passages)

    def pairs(self) -> list[tuple[str, str]]:
        """(query, passage) pairs as a cross-encoder reads them; W5: (premise, claim)."""
        if self.claims:
            return [(p[0], c) for p, cs in zip(self.passages, self.claims) for c in cs]
        return [(q, p) for q, ps in zip(self.queries, self.passages) for p in ps]


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


class Corpus:
    """Loads and cuts the texts once; hands out distinct passages."""

    def __init__(
        self,
        tokenizer,
        data_root: Path = DATA_ROOT,
        long_tokens: int = 200,
        seed: int = 0,
    ):
        self.tok = tokenizer
        self.rng = random.Random(seed)
        root = Path(data_root)
        docs = _jsonl(root / "beir_scifact" / "corpus.jsonl")
        self._docs = [d["text"] for d in docs if d.get("text")]
        self.claims = [
            q["text"] for q in _jsonl(root / "beir_scifact" / "queries.jsonl")
        ]
        trec = []
        for split in ("train", "dev"):
            trec += _jsonl(root / "trecqa" / f"{split}.jsonl")
        self.trec = trec
        self.long_tokens = long_tokens
        self._pools: dict[int, list[str]] = {}
        self.long = self.cut_passages(self._docs, long_tokens)
        self.rng.shuffle(self.long)
        self.short = [c["text"] for q in trec for c in q["candidates"]]
        # de-duplicate, keep order
        self.short = list(dict.fromkeys(self.short))
        self.rng.shuffle(self.short)

    def n_tokens(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def cut_passages(self, texts, n_tokens, start_word=0):
        """Each text from word `start_word`, cut at a word boundary to at most `n_tokens` tokens;
        texts shorter than `n_tokens` are dropped."""
        texts = [" ".join(t.split()[start_word:]) for t in texts]
        enc = self.tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        out = []
        for text, offs in zip(texts, enc["offset_mapping"]):
            if len(offs) < n_tokens:
                continue
            end = offs[n_tokens - 1][1]
            if end < len(text) and not text[end].isspace():
                sp = text.rfind(" ", 0, end)
                end = sp if sp > 0 else end
            out.append(text[:end].strip())
        return out

    def long_passages(self, n: int, n_tokens: int | None = None) -> list[str]:
        """n distinct ~n_tokens passages; past the pool, windows start further into the abstracts."""
        n_tokens = n_tokens or self.long_tokens
        pool = self.long if n_tokens == self.long_tokens else self._pool(n_tokens)
        out, shift = list(pool[:n]), 0
        seen = set(out)
        while len(out) < n:
            shift += 7
            extra = self.cut_passages(self._docs, n_tokens, start_word=shift)
            for e in extra:
                if e not in seen:
                    seen.add(e)
                    out.append(e)
                    if len(out) >= n:
                        break
            if shift > 400:
                raise RuntimeError(
                    f"cannot build {n} distinct passages of {n_tokens} tokens"
                )
        return out

    def _pool(self, n_tokens):
        if n_tokens not in self._pools:
            pool = self.cut_passages(self._docs, n_tokens)
            random.Random(n_tokens).shuffle(pool)
            self._pools[n_tokens] = pool
        return self._pools[n_tokens]


def build_workloads(
    corpus: Corpus, names=("W1", "W2", "W3", "W4", "W5")
) -> dict[str, Workload]:
    out = {}
    claims = corpus.claims
    longs = corpus.long_passages(64 * 20 + 100)
    if "W1" in names:
        out["W1"] = Workload(
            "W1",
            "1 query x 100 passages of ~200 tokens (RAG top-100)",
            [claims[0]],
            [longs[:100]],
        )
    if "W2" in names:
        out["W2"] = Workload(
            "W2", "1 query x 20 passages of ~200 tokens", [claims[1]], [longs[100:120]]
        )
    if "W3" in names:
        q = corpus.trec[0]
        own = list(dict.fromkeys(c["text"] for c in q["candidates"]))
        rest = [s for s in corpus.short if s not in set(own)]
        out["W3"] = Workload(
            "W3",
            "1 question x 100 one-sentence passages (~30 tokens)",
            [q["query"]],
            [(own + rest)[:100]],
        )
    if "W4" in names:
        qs = claims[2:66]
        out["W4"] = Workload(
            "W4",
            "64 queries x 20 passages of ~200 tokens (batch throughput)",
            qs,
            [longs[i * 20 : (i + 1) * 20] for i in range(64)],
        )
    if "W5" in names:
        prem = longs[-10:]
        cl = claims[100:200]
        out["W5"] = Workload(
            "W5",
            "groundedness: 10 passages (~200 tokens) x 10 short claims each",
            [""] * 10,
            [[p] for p in prem],
            unit="claims",
            claims=[cl[i * 10 : (i + 1) * 10] for i in range(10)],
        )
    return out


def linear_workload(corpus: Corpus, n: int) -> Workload:
    return Workload(
        f"L{n}",
        f"1 query x {n} passages of ~200 tokens (linear-cost check)",
        [corpus.claims[0]],
        [corpus.long_passages(n)],
    )


def length_workload(corpus: Corpus, n_tokens: int, n: int = 64) -> Workload:
    """1 query x n passages of exactly-ish n_tokens (passage-length sweep)."""
    return Workload(
        f"len{n_tokens}",
        f"1 query x {n} passages of ~{n_tokens} tokens",
        [corpus.claims[0]],
        [corpus.long_passages(n, n_tokens)],
    )
