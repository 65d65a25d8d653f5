"""Inputs layer: prompt templates (`prompts`), the token layout of a prompt (`layout`), tokenization
(`tokenization`), the checks on what a user passes in (`checks`) and the published tokenizers (`real_tokenizers`).
Import names from their module, e.g. ``from mapflow.inputs.prompts import TEMPLATES``."""
