"""The library: scanning and decoding, the embedding store, Annoy, sqlite, and the matcher.

Pure modules (``protocols``, ``matcher``, ``recognizer``) do no I/O; storage
adapters (``store``, ``annoy_index``, ``decode``, ``tags``, ``builder``) do.
"""
