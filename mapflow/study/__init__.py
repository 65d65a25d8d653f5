"""Study layer: the per-sample analysis context a study's ``run(ctx)`` receives (`context`, split by job into
`config`, `clean`, `knockouts` and `datasets`), a study's declaration (`declaration`), the runner that drives a study
over samples into a store (`runner`), the resolution of a run's model, data, template and provenance (`resolve`),
concurrent remote samples (`inflight`) and interrupt handling (`interrupts`).

``mapflow.study`` is also the declaring decorator: ``@mapflow.study(flows=..., figure=...)`` calls
`mapflow.study.declaration.study`. The package and the decorator share the name because Python binds a package's
submodule onto its parent (``import mapflow.study.runner`` sets ``mapflow.study``), so a function of that name on
``mapflow`` would be replaced by the package the first time any study module is imported.
"""

import sys
from types import ModuleType


class _DeclaringPackage(ModuleType):
    def __call__(self, *args, **declared):
        from .declaration import study

        return study(*args, **declared)


sys.modules[__name__].__class__ = _DeclaringPackage
