"""Notary v1 trust data: parsing, canonical JSON, keys, the pure trusted set, client and cache."""
