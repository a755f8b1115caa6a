"""Catalogue search: the triplet embedding, the catalogue index and retrieval."""
