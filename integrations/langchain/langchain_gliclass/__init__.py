"""LangChain integration of gliclass-rerank: `GLiClassRerank`, a document compressor."""

from langchain_gliclass.rerank import GLiClassRerank

__all__ = ["GLiClassRerank"]
