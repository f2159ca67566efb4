from llama_index.postprocessor.gliclass_rerank.base import GLiClassRerank

__all__ = ["GLiClassRerank"]
