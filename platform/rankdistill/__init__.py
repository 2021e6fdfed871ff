"""rankdistill: distil LLM rankers into fast retrievers and rerankers, every stage on Ray."""

__version__ = "0.1.0"
