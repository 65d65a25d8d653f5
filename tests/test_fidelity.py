"""Fidelity to the paper's released code (issue 14): each test fails on the behaviour the audit found."""

import numpy as np
import pytest
import torch

from mapflow.data.sample import Sample


# ---- verb anchors (appendix C.2) -------------------------------------------------------------------------------

def test_anchor_at_the_third_generated_token_keeps_one_response_token():
    from studies.verb_anchors import response_span

    # anchor index 2: the input ends at generated token 1 (the last); token 0 is the only earlier response token.
    # The released code's end = max(1, len - num_open) keeps it; without the floor the span was empty (NaN sample)
    assert response_span(100, anchor=2, previous_anchor=None, num_open=1) == [100]
    assert response_span(100, anchor=1, previous_anchor=None, num_open=1) == []  # no earlier response token at all
    assert response_span(100, anchor=5, previous_anchor=None, num_open=1) == [100, 101, 102]


def test_verb_anchor_reference_response_is_256_tokens_by_default(monkeypatch):
    import studies.verb_anchors as verb_anchors

    seen = {}

    class Stop(Exception):
        pass

    def fake_generate(adapter, prepared, *, max_new_tokens, **kwargs):
        seen["max_new_tokens"] = max_new_tokens
        raise Stop

    class Ctx:
        class config:
            @staticmethod
            def option(name, default=None):
                return {"verbs": "list"}.get(name, default)
        adapter = prepared = None

    monkeypatch.setattr(verb_anchors, "greedy_generate", fake_generate)
    with pytest.raises(Stop):
        verb_anchors.run(Ctx())
    assert seen["max_new_tokens"] == 256


def test_vcgbench_system_prompt_has_no_trailing_newline():
    from mapflow.prompts import VCGBENCH_FREE_FORM, build_prompt, prompt_text

    sample = Sample("temporal_qa/0", "temporal_qa", "v.mp4", "What happens first?", (), -1,
                    reference_answer="A man opens a door.")
    text = prompt_text(build_prompt(sample, VCGBENCH_FREE_FORM).segments)
    # released: "{SYSTEM} USER: <image>\n USER: {q} ASSISTANT:" with SYSTEM ending "...based on the provided video."
    assert "based on the provided video. USER: <video>\n USER: What happens first? ASSISTANT:" in text
