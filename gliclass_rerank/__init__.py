"""gliclass-rerank: GLiClass zero-shot classifiers as listwise and NLI rerankers.

    >>> from gliclass_rerank import GLiClassReranker
    >>> reranker = GLiClassReranker.from_pretrained("knowledgator/gliclass-edge-v3.0")
    >>> reranker.rerank("what causes rain?", ["Clouds release water ...", "The stock market ..."])
"""

from .config import GLiClassConfig, UnsupportedConfigError
from .reranker import GLiClassReranker
from .results import RerankResult

__all__ = ["GLiClassConfig", "GLiClassReranker", "RerankResult", "UnsupportedConfigError"]
__version__ = "0.1.0"
