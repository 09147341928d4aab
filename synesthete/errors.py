"""The exception hierarchy. Every error a user can cause derives from SynestheteError.

The CLI prints ``str(err)`` as one line and exits non-zero, so messages name
the offending thing (file, device, field) and the reason.
"""

from __future__ import annotations


class SynestheteError(Exception):
    """Base class for all errors raised on purpose by Synesthete."""


class ConfigError(SynestheteError, ValueError):
    """A setting is out of range or inconsistent with another."""


class AudioFormatError(SynestheteError, ValueError):
    """Audio that cannot be used: undecodable, wrong shape or dtype, non-finite, silent."""


class DeviceError(SynestheteError):
    """An audio device is missing, busy, or refuses the requested settings."""


class ModelError(SynestheteError):
    """An encoder file is missing, corrupt, or does not match the expected contract."""


class LibraryError(SynestheteError):
    """The index directory is missing, corrupt, or inconsistent."""


class ProtocolError(SynestheteError, ValueError):
    """A malformed or unsupported client message."""


class StreamError(SynestheteError):
    """A network stream cannot be opened (bad URL, DNS, HTTP error, not audio) or was lost."""
