"""Inputs layer: prompt templates (`prompts`), the token layout of a prompt (`layout`), tokenization
(`tokenization`) and the checks on what a user passes in (`checks`).

The names of the former ``mapflow.inputs`` module (now `checks`) and `prompts.TEMPLATES` import from here too."""

from .._reexport import reexport

__getattr__ = reexport(__name__, ("checks", "prompts"))
