"""Retrieve with BM25 and rerank with GLiClass in a Haystack pipeline, fully offline.

    pip install -e . -e integrations/haystack
    python examples/haystack_rag.py --model knowledgator/gliclass-edge-v3.0
    python examples/haystack_rag.py --model /path/to/local/checkpoint --mode nli --top-k 3
"""

import argparse

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import ComponentDevice
from haystack_integrations.components.rankers.gliclass import GLiClassRanker

CORPUS = [
    ("Rain", "Rain falls when water droplets in clouds merge and grow too heavy to stay aloft."),
    ("Clouds", "Clouds form when warm, moist air rises, cools and its water vapour condenses on dust."),
    ("Snow", "Snow forms when water vapour freezes into ice crystals inside cold clouds."),
    ("Markets", "Stock markets fell after the central bank raised interest rates again."),
    ("Baking", "Banana bread needs ripe bananas, flour, sugar, butter and a hot oven."),
    ("Football", "The team won the cup final after a dramatic penalty shootout."),
    ("Monsoon", "Monsoon rains come when seasonal winds carry moist ocean air over hot land."),
    ("Drought", "A drought is a long period with far less rain than usual in a region."),
    ("Rainbows", "Rainbows appear when sunlight is refracted and reflected inside raindrops."),
    ("Volcanoes", "Volcanic eruptions can inject ash high into the atmosphere and cool the climate."),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="knowledgator/gliclass-edge-v3.0", help="hub id or local folder")
    parser.add_argument("--query", default="Why does rain fall from clouds?")
    parser.add_argument("--mode", choices=["listwise", "nli"], default="listwise")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    args = parser.parse_args()

    store = InMemoryDocumentStore()
    store.write_documents([Document(content=text, meta={"title": title}) for title, text in CORPUS])

    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=8))
    pipeline.add_component(
        "ranker",
        GLiClassRanker(
            model=args.model,
            device=ComponentDevice.from_str(args.device) if args.device else None,
            top_k=args.top_k,
            mode=args.mode,
            meta_fields_to_embed=["title"],
        ),
    )
    pipeline.connect("retriever.documents", "ranker.documents")

    result = pipeline.run({"retriever": {"query": args.query}, "ranker": {"query": args.query}})
    print(f"query: {args.query}\n")
    for rank, doc in enumerate(result["ranker"]["documents"], 1):
        bm25 = doc.meta.get("retrieval_score", 0.0)
        print(f"{rank}. {doc.score:.4f} (bm25 {bm25:.2f}) [{doc.meta['title']}] {doc.content}")


if __name__ == "__main__":
    main()
