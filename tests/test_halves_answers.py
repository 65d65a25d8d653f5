"""Table 2's example answers (issue 22, part 7c): generated open-ended as the paper, for the same sample and frames,
with the prompt that answered recorded; the run's own prompt on request or where no open-ended stem exists."""

import importlib
from dataclasses import replace

import pytest
import torch
from conftest import study_context

from mapflow.analysis.context import StudyConfig
from mapflow.errors import MapflowError
from mapflow.inputs.prompts import LLAVA_MCQA, LLAVA_OPEN_ENDED, build_prompt
from mapflow.knockout.flows import Flow
from mapflow.readouts.generation import greedy_generate

halves = importlib.import_module("mapflow.studies.cross_frame_halves")


def test_answers_come_from_the_open_ended_prompt_of_the_same_sample(sdpa_adapter, sample, frames):
    ctx = study_context(
        sdpa_adapter, sample, frames, samples="all", prompt_template=LLAVA_MCQA.name, options={"generate": "2"}
    )
    ds = halves.run(ctx)
    asked = build_prompt(sample, LLAVA_OPEN_ENDED)
    assert str(ds.answer_template.values) == "llava_open_ended"
    assert str(ds.answer_prompt.values) == asked.answer_prompt and "moves to the" in asked.answer_prompt
    open_ended = sdpa_adapter.prepare(frames, asked.segments)
    decode = sdpa_adapter.tokenizer.decode
    # the knockout runs on the open-ended input's own positions (its video sits elsewhere than the MC prompt's)
    cut = torch.from_numpy(Flow.parse("cross_frame").block_matrix(open_ended.layout))
    first_half = halves.halves(sdpa_adapter.num_layers)["first_half"]
    expected = decode(greedy_generate(sdpa_adapter, open_ended, max_new_tokens=2, blocked=cut, layers=first_half))
    assert str(ds.answer_text.sel(layers="first_half").values[0]) == expected
    multiple_choice = decode(greedy_generate(sdpa_adapter, ctx.prepared, max_new_tokens=2))
    run_prompt = halves.run(
        replace(ctx, config=replace(ctx.config, options={"generate": "2", "generate_template": "run"}))
    )
    assert str(run_prompt.clean_answer_text.values) == multiple_choice
    assert str(run_prompt.answer_template.values) == LLAVA_MCQA.name


def test_a_task_without_an_open_ended_stem_answers_the_run_prompt_and_says_so(sdpa_adapter, sample, frames):
    unstemmed = replace(sample, task="unscripted_task", sample_id="unscripted_task/0000")
    ctx = study_context(
        sdpa_adapter, unstemmed, frames, samples="all", prompt_template=LLAVA_MCQA.name, options={"generate": "1"}
    )
    ds = halves.run(ctx)
    assert str(ds.answer_template.values) == LLAVA_MCQA.name
    assert str(ds.answer_prompt.values) == ctx.prompt.answer_prompt


def test_the_answers_table_names_the_prompt_and_its_stem(sdpa_adapter, sample, frames):
    from mapflow.viz import tables

    ds = halves.run(study_context(sdpa_adapter, sample, frames, samples="all", options={"generate": "1"}))
    ds = ds.expand_dims(sample=[sample.sample_id]).assign_coords(task=("sample", [sample.task]))
    row = tables.generated_answers(ds).iloc[0]
    assert row["prompt"] == "llava_open_ended"
    assert row["stem"] == build_prompt(sample, LLAVA_OPEN_ENDED).answer_prompt.rpartition("\n")[2].strip()


def test_an_unknown_generation_template_is_refused_before_the_run():
    with pytest.raises(MapflowError, match="generate_template=nope.*run.*llava_open_ended"):
        halves.check_options(None, StudyConfig(options={"generate": "2", "generate_template": "nope"}))
