"""siamrec: content-based music recommendation with transfer-learned and metric-learned audio embeddings."""

__version__ = "0.1.0"
