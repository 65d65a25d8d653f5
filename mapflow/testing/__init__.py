"""Builders of test and benchmark models (random weights, never a finding about a real model): tiny checkpoints of
every family (`tiny`, `tiny_families`), real-inputs checkpoints with the published tokenizers (`real_inputs`), the
7B-shaped random models of ``mapflow bench`` (`shapes`) and the choice of the model a bench run measures
(`bench_models`). The adapters they are loaded with live in `mapflow.models`."""
