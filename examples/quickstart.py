"""Rerank a few passages with a GLiClass model, listwise and NLI.

    python examples/quickstart.py --model knowledgator/gliclass-edge-v3.0   # needs the Hub
    python examples/quickstart.py --model ./my-local-gliclass-folder         # offline

No model at hand? `python -m gliclass_rerank.testing /tmp/tiny-gliclass` writes a tiny random one
(its scores mean nothing, but every code path runs).
"""

from __future__ import annotations

import argparse

from gliclass_rerank import GLiClassReranker

QUERY = "How do vaccines protect against viral infections?"
PASSAGES = [
    "Vaccines train the immune system to recognise a virus, so antibodies are ready before infection.",
    "The stock market fell sharply as investors worried about inflation.",
    "Antibodies produced after vaccination bind viral proteins and block the virus from entering cells.",
    "A good night of sleep improves memory and mood.",
    "Influenza viruses change every season, so flu vaccines are updated every year.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="knowledgator/gliclass-edge-v3.0", help="hub id or local folder")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    reranker = GLiClassReranker.from_pretrained(args.model, device=args.device)
    print(reranker)
    print(f"\nquery: {QUERY}\n\nlistwise (the query reads the passages as its labels):")
    for result in reranker.rerank(QUERY, PASSAGES, top_n=3):
        print(f"  {result.score:.3f}  [{result.index}] {result.text}")
    print("\nNLI (each passage is a premise, the query its hypothesis):")
    for result in reranker.rerank(QUERY, PASSAGES, top_n=3, mode="nli"):
        print(f"  {result.score:.3f}  [{result.index}] {result.text}")
    claims = ["Vaccines produce antibodies.", "Vaccines are updated yearly."]
    print("\ngroundedness: does each passage support each claim?")
    for passage, row in zip(PASSAGES[:3], reranker.entailment(PASSAGES[:3], claims), strict=True):
        print(f"  {passage[:50]:50s} " + "  ".join(f"{s:.3f}" for s in row))
    print("\nzero-shot classification:")
    print(" ", reranker.classify(PASSAGES[1], ["finance", "health", "sports"])[0])


if __name__ == "__main__":
    main()
