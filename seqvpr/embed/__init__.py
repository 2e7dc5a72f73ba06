"""CCT384 frame embeddings with a content-addressed cache."""
