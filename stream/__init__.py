"""Audio in: sources, the ring buffer, streaming resampling and windowing.

Core modules here (ringbuffer, resample, windowing, synth) do no I/O; device
and file access live in ``sources``.
"""
