"""Rerank retrieved nodes with GLiClass in a LlamaIndex query engine, fully offline.

    pip install -e . -e integrations/llama-index
    python examples/llama_index_rag.py --model knowledgator/gliclass-edge-v3.0
    python examples/llama_index_rag.py --model /path/to/local/checkpoint --mode nli --top-n 3

To stay offline the example retrieves every node of a tiny corpus (a `SummaryIndex`) and uses
`MockLLM`; with a `VectorStoreIndex`, your embedding model and your LLM, only the index and `llm=` change.
"""

import argparse

from llama_index.core import Document, SummaryIndex
from llama_index.core.llms import MockLLM
from llama_index.postprocessor.gliclass_rerank import GLiClassRerank

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
    parser.add_argument("--top-n", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    args = parser.parse_args()

    documents = [Document(text=text, metadata={"title": title}) for title, text in CORPUS]
    index = SummaryIndex.from_documents(documents)
    reranker = GLiClassRerank(model=args.model, top_n=args.top_n, mode=args.mode, device=args.device)
    query_engine = index.as_query_engine(llm=MockLLM(max_tokens=16), node_postprocessors=[reranker])

    response = query_engine.query(args.query)
    print(f"query: {args.query}\n")
    for rank, node in enumerate(response.source_nodes, 1):
        print(f"{rank}. {node.score:.4f} [{node.metadata['title']}] {node.get_content()}")


if __name__ == "__main__":
    main()
