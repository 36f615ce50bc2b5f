"""Search: query language, hybrid fusion and reranking over an Index, filtered for a principal."""

from sovra.search.hybrid import FusionSettings, Reranker, Searcher, SearchHit, SearchResult
from sovra.search.language import detect_query_language

__all__ = [
    "FusionSettings",
    "Reranker",
    "SearchHit",
    "SearchResult",
    "Searcher",
    "detect_query_language",
]
