"""Synesthete: real-time streaming music recognizer.

The package maps the repository's top-level folders under one namespace:
``synesthete.stream`` (capture, ring buffer, resampling, windowing),
``synesthete.inference`` (encoders), ``synesthete.index`` (library, Annoy,
matcher) and ``synesthete.clients`` (CLI, sinks, live views).
"""

from __future__ import annotations

__version__ = "0.1.0"
