"""Where a study's traces run: a backend object chosen once per run (`mapflow.backends.base.Backend`).

`LocalBackend` runs them in this process; the NDIF backend sends them to a server. A new backend (another server, a
cluster executor) is one new module here implementing the same small protocol.
"""

from .base import Backend
from .local import LocalBackend

__all__ = ["Backend", "LocalBackend"]
