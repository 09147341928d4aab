"""Encoders: 4 s windows at 16 kHz in, L2-normalised float32 vectors out."""
