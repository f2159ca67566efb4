"""Retrieve, rerank with GLiClass and build a RAG prompt with LangChain, fully offline.

    pip install -e . -e integrations/langchain langchain-classic
    python examples/langchain_rag.py --model knowledgator/gliclass-edge-v3.0
    python examples/langchain_rag.py --model /path/to/local/checkpoint --mode nli --top-n 3

The first stage is a tiny keyword retriever so that the example needs no embedding model; any LangChain
retriever (a vector store's `as_retriever()`, BM25, ...) takes its place.
"""

import argparse
import re

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.prompts import PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_gliclass import GLiClassRerank

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


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


class KeywordRetriever(BaseRetriever):
    """Documents sharing the most words with the query (a stand-in for a real first stage)."""

    documents: list[Document]
    k: int = 8

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        overlap = [(len(words(query) & words(d.page_content)), i) for i, d in enumerate(self.documents)]
        return [self.documents[i] for _, i in sorted(overlap, key=lambda x: (-x[0], x[1]))[: self.k]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="knowledgator/gliclass-edge-v3.0", help="hub id or local folder")
    parser.add_argument("--query", default="Why does rain fall from clouds?")
    parser.add_argument("--mode", choices=["listwise", "nli"], default="listwise")
    parser.add_argument("--top-n", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    args = parser.parse_args()

    docs = [Document(page_content=text, metadata={"title": title}, id=title) for title, text in CORPUS]
    compressor = GLiClassRerank(
        model=args.model, top_n=args.top_n, mode=args.mode, device=args.device, metadata_fields=["title"]
    )
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=KeywordRetriever(documents=docs)
    )

    print(f"query: {args.query}\n")
    for rank, doc in enumerate(retriever.invoke(args.query), 1):
        print(f"{rank}. {doc.metadata['relevance_score']:.4f} [{doc.metadata['title']}] {doc.page_content}")

    # The same retriever inside an LCEL chain; put your chat model where the prompt is printed.
    prompt = PromptTemplate.from_template("Answer from the context.\n\nContext:\n{context}\n\nQuestion: {question}")
    chain = (
        {
            "context": retriever | RunnableLambda(lambda ds: "\n".join(f"- {d.page_content}" for d in ds)),
            "question": RunnablePassthrough(),
        }
        | prompt
    )
    print("\nprompt for the LLM:\n" + chain.invoke(args.query).to_string())


if __name__ == "__main__":
    main()
