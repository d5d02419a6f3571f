"""Models: the Choi 2017 backbone and its weights, and the heads that turn features into embeddings."""
