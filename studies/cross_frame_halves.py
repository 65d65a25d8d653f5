"""Cross-frame knockout in the first half, the second half and all layers (paper Table 2 / Table B).

One cell per layer set instead of a sweep. Accuracy after knockout is ``correct_knockout`` (the run's correctness rule); the table
(`mapflow.viz.tables.halves_table`) gives the accuracy drop among the originally correct samples and in points.

Options: ``generate=N`` also writes the first N greedily generated tokens of the answer, clean and under each
knockout (Table 2's example answers), as ``answer_text`` / ``clean_answer_text``. The paper's examples are open-ended
answers ("The action being performed in the video is to **stand up**"), so they are generated from the same sample
(same frames) asked open-ended: ``generate_template=NAME`` (default ``llava_open_ended``, its sentence stem per task;
``run`` answers the run's own prompt, e.g. the multiple-choice one). A sample the open-ended template cannot ask (no
stem for its task) answers the run's own prompt instead. Which prompt answered is stored per sample
(``answer_template``, and the text the answer continues, ``answer_prompt``). Runs on all samples by default.
"""

import numpy as np
import torch
import xarray as xr

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.analysis.options import StudyOption, whole_number
from mapflow.differences import default
from mapflow.errors import MapflowError
from mapflow.inputs.prompts import TEMPLATES, build_prompt
from mapflow.knockout.flows import Flow
from mapflow.readouts.generation import greedy_generate
from mapflow.viz import tables

FLOWS = ("cross_frame",)
GENERATE_TEMPLATE = default("generate_template")  # Table 2's answers are open-ended (§3.2: "open-ended responses")
RUN_PROMPT = "run"  # `generate_template=run`: the run's own prompt
OPTIONS = {
    "generate": StudyOption(
        "also write the first N greedily generated answer tokens, clean and under each knockout "
        "(Table 2's example answers)",
        "0",
        parse=whole_number(0),
        expects="N >= 0",
    ),
    "generate_template": StudyOption(
        "the prompt the example answers are generated from (run: the run's own)",
        GENERATE_TEMPLATE,
        (RUN_PROMPT, *TEMPLATES),
    ),
}


def halves(num_layers: int) -> dict[str, tuple[int, ...]]:
    middle = num_layers // 2
    return {
        "first_half": tuple(range(middle)),
        "second_half": tuple(range(middle, num_layers)),
        "all": tuple(range(num_layers)),
    }


def generation_input(ctx: StudyContext):
    """(prepared input, template name, answer prompt) the example answers are generated from: the sample asked with
    ``generate_template`` on the same frames, or the run's own input."""
    name = ctx.config.option("generate_template", GENERATE_TEMPLATE)
    own = (ctx.prepared, ctx.config.prompt_template or "", ctx.prompt.answer_prompt)
    if name == RUN_PROMPT or name == ctx.config.prompt_template or ctx.frames is None:
        return own
    try:
        prompt = build_prompt(ctx.sample, TEMPLATES[name])
    except ValueError:  # no open-ended stem for this task: the run's prompt, recorded as such
        return own
    prepared = ctx.adapter.prepare(
        ctx.frames,
        prompt.segments,
        option_letters=prompt.option_letters,
        true_letter=prompt.true_letter,
        non_option_includes_prefix=ctx.config.non_option_includes_prefix,
        timestamps=ctx.timestamps,
    )
    return prepared, name, prompt.answer_prompt


def check_options(adapter, config, **_) -> None:
    """Before the store exists (`mapflow.analysis.run_checks.check_run_options`)."""
    name = config.option("generate_template", GENERATE_TEMPLATE)
    if name != RUN_PROMPT and name not in TEMPLATES:
        raise MapflowError(
            f"--option generate_template={name}: choose {RUN_PROMPT} (the run's own prompt) or a "
            f"template: {', '.join(TEMPLATES)}"
        )
    if int(config.option("generate", OPTIONS["generate"].default)) < 0:
        raise MapflowError(f"--option generate={config.option('generate')}: give a number of tokens >= 0")


def report_section(w, stores):
    """Table 2 / Table B: accuracy after knocking out the first or the second half of the layers."""
    from mapflow.viz import tables

    for st in stores:
        s = w.section(f"First half vs second half, {st.model}", "Table 2 / Table B")
        table = tables.halves_table(st.ds)
        w.table(
            s,
            f"table2_halves_{st.model}",
            table,
            "Accuracy (%) after cross-frame knockout per layer set; "
            "drop in points and among originally correct samples",
        )
        overall = table.loc["all"]
        w.reading(
            s,
            f"Over all tasks the first-half knockout costs {overall['first_half_drop_pts']:.1f} points and "
            f"the second-half one {overall['second_half_drop_pts']:.1f}.",
        )
        if "answer_text" in st.ds:
            w.table(
                s,
                f"table2_answers_{st.model}",
                tables.generated_answers(st.ds, limit=2),
                "Answers generated greedily, clean and under each knockout, after the stem of the prompt named "
                "in 'prompt' (Table 2's are open-ended)",
            )


@mf.study(
    flows=FLOWS,
    table=tables.halves_table,
    samples="all",
    options=OPTIONS,
    check=check_options,
    report=({"order": 30, "section": report_section},),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        {"order": 100, "name": "cross_frame_halves-video", "options": {"generate": "3"}},
        {"order": 110, "name": "cross_frame_halves-frames", "variant": "frames", "options": {"generate": "3"}},
    ),
)
def run(ctx: StudyContext):
    layer_sets = halves(ctx.adapter.num_layers)
    ds = ctx.knockout(FLOWS, layer_sets)
    max_new = int(ctx.config.option("generate", OPTIONS["generate"].default))
    if max_new > 0:
        prepared, template, answer_prompt = generation_input(ctx)
        decode = ctx.adapter.tokenizer.decode
        blocked = torch.from_numpy(Flow.parse("cross_frame").block_matrix(prepared.layout))
        texts = [
            decode(greedy_generate(ctx.adapter, prepared, max_new_tokens=max_new, blocked=blocked, layers=layers))
            for layers in layer_sets.values()
        ]
        ds["answer_text"] = xr.DataArray(np.asarray([texts], dtype=object), dims=("flow", "layers"))
        ds["clean_answer_text"] = (
            (),
            np.asarray(decode(greedy_generate(ctx.adapter, prepared, max_new_tokens=max_new)), dtype=object),
        )
        ds["answer_template"] = ((), np.asarray(template, dtype=object))
        ds["answer_prompt"] = ((), np.asarray(answer_prompt, dtype=object))
    return ds
