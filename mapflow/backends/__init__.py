"""Where a study's traces run: a backend object chosen once per run (`choose_backend`, `base.Backend`).

`LocalBackend` runs them in this process; `NDIFBackend` sends them to an NDIF server. A new backend (another server,
a cluster executor) is one new module here implementing the same small protocol; pass an instance as
``mf.run(..., backend=...)`` or ``run_study(..., backend=...)``.
"""

from .base import Backend
from .choose import choose_backend
from .local import LocalBackend
from .ndif import NDIFBackend

__all__ = ["Backend", "LocalBackend", "NDIFBackend", "choose_backend"]
