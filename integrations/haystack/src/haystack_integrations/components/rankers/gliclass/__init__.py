from haystack_integrations.components.rankers.gliclass.ranker import GLiClassRanker

__all__ = ["GLiClassRanker"]
