"""Model backends behind small protocols: embeddings now; reranking and generation plug in here."""

from sovra.models.base import Embedder, ModelError, Vectors
from sovra.models.embedding import SentenceTransformerEmbedder, default_model_dir

__all__ = ["Embedder", "ModelError", "SentenceTransformerEmbedder", "Vectors", "default_model_dir"]
