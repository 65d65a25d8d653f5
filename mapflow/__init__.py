"""mapflow: map how information flows inside video LLMs (attention knockout on nnsight).

From Python (see docs/python.md, "From Python")::

    import mapflow as mf
    ds = mf.run("cross_frame", window=3, limit=1)          # the embedded organism on the embedded benchmark
    ds = mf.run(my_study, mf.load_model(path), mf.load_benchmark("tvbench", root, limit=2), out="x.zarr")

    @mf.study(flows=("video->last",), samples="all")   # a study's declaration (docs/writing-a-study.md)
    def my_study(ctx):
        return ctx.sweep(["video->last"])               # the study API: methods of ctx (StudyContext)

The public names load lazily, so ``import mapflow`` stays fast.
"""

import sys as _sys

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_API = {
    "load_model": "api",
    "load_benchmark": "api",
    "run": "api",
    "check": "api",
    "available_studies": "api",
    "study": "analysis.declaration",
    "StudyConfig": "analysis.config",
    "StudyContext": "analysis.context",
    "Flow": "knockout.flows",
    "Window": "knockout.flows",
    "open_dataset": "api",  # a store, or a run directory of shards merged
    "prune_plan": "api",  # a pruning plan from a measured map (issue 27)
    "prune_eval": "api",  # the plan against no pruning and FastV-style pruning
    "MapflowError": "errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        import importlib

        module = importlib.import_module(f"{__name__}.{_API[name]}")
        value = module if _API[name] == name else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mapflow' has no attribute '{name}'")


def __dir__():
    return sorted({*globals(), *_API})


def _map_checkout_studies() -> None:
    """In a source checkout (run from the repository root, or installed editable) ``mapflow.studies`` is the
    repository's top-level ``studies/`` folder, as the wheel maps it (setup.py). The finder goes first on the meta
    path so another copy's editable finder never serves this copy's studies."""
    from importlib.util import spec_from_file_location
    from pathlib import Path

    here = Path(__file__).resolve().parent
    folder = here.parent / "studies"
    if (here / "studies").is_dir() or not (folder / "__init__.py").is_file():
        return  # an installed wheel, or a copy without the folder

    class CheckoutStudies:
        @staticmethod
        def find_spec(fullname, path=None, target=None):
            if fullname != f"{__name__}.studies":
                return None
            return spec_from_file_location(fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])

        @staticmethod
        def invalidate_caches():
            pass

    _sys.meta_path.insert(0, CheckoutStudies())


_map_checkout_studies()
