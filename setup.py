"""Packaging that pyproject.toml cannot say alone: the top-level ``studies/`` and ``data/`` folders ship inside the
one installed package, as ``mapflow.studies`` and ``mapflow._data`` (read through `importlib.resources`).

A source checkout needs none of this: ``mapflow/__init__.py`` maps the same names onto the sibling folders.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["mapflow", "mapflow.*"], exclude=["*.__pycache__"]),
              "mapflow.studies", "mapflow._data"],
    package_dir={"mapflow.studies": "studies", "mapflow._data": "data"},
    package_data={"mapflow._data": ["**/*"], "mapflow.ndif_local.server": ["*.txt", "*.c"]},
    exclude_package_data={"": ["__pycache__/*", "*.pyc"]},
)
