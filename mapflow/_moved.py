"""Old module paths of the flat layout (mapflow 0.1 before the layer packages) as aliases of the modules that
replaced them: ``import mapflow.flows`` gives ``mapflow.knockout.flows`` itself (the same module object, so reading
or patching a name through either path is one and the same), imported only when an old path is asked for."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "analysis": "study.context", "runner": "study.runner", "resolve": "study.resolve", "inflight": "study.inflight",
    "interrupts": "study.interrupts",
    "flows": "knockout.flows", "engine": "knockout.engine", "planner": "knockout.planner",
    "suffix_attention": "knockout.suffix_attention", "cells": "knockout.cells", "screen": "knockout.screen",
    "precision": "knockout.precision", "calibrate": "knockout.calibrate",
    "layout": "inputs.layout", "tokenization": "inputs.tokenization", "prompts": "inputs.prompts",
    "readout": "readouts.lens", "attention": "readouts.attention", "generation": "readouts.generation",
    "keywords": "readouts.keywords", "metrics": "results.metrics", "pathways": "readouts.pathways",
    "provenance": "results.provenance", "integrity": "results.integrity", "store_lock": "results.store_lock",
    "figures": "viz.figures", "plots": "viz.figures", "tables": "viz.tables", "report": "viz.report",
    "report_beyond": "viz.report_beyond", "thumbnails": "viz.thumbnails",
    "suite": "cli.demo", "bench": "cli.bench",
    "data.synthetic": "organism.synthetic", "data.temporal_tasks": "organism.temporal_tasks",
    "remote.stack": "ndif_local.stack", "remote.commands": "ndif_local.commands",
    "readouts.metrics": "results.metrics",  # README: mapflow.readouts.metrics.correctness_disagreements
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``mapflow.<old path>`` as the module now at ``mapflow.<new path>``."""

    def __init__(self, package: str):
        self.aliases = {f"{package}.{old}": f"{package}.{new}" for old, new in MOVED.items()}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.aliases:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(self.aliases[spec.name])  # its own name, file and spec stay as they are

    def exec_module(self, module):
        pass  # already executed under its new name


def install(package: str) -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules(package))
