"""Cross-frame knockout in the first half, the second half and all layers (paper Table 2 / Table B).

One cell per layer set instead of a sweep. Accuracy after knockout is ``pred_knockout == answer_token``; the table
(`mapflow.viz.tables.halves_table`) gives the accuracy drop among the originally correct samples and in points.

Options: ``generate=N`` also writes the first N greedily generated tokens of the answer, clean and under each
knockout (Table 2's example answers), as ``answer_text`` / ``clean_answer_text``. Runs on all samples by default.
"""

import numpy as np
import torch
import xarray as xr

from mapflow.study.context import StudyContext, knockout_layer_sets
from mapflow.knockout.flows import Flow
from mapflow.readouts.generation import greedy_generate

DEFAULT_SAMPLES = "all"
FLOWS = ("cross_frame",)


def halves(num_layers: int) -> dict[str, tuple[int, ...]]:
    middle = num_layers // 2
    return {"first_half": tuple(range(middle)), "second_half": tuple(range(middle, num_layers)),
            "all": tuple(range(num_layers))}


# What `mapflow plot` and the demo suite (`mapflow.cli.demo.organism_suite`) take from this study:
TABLE = "halves_table"  # the mapflow.viz.tables function `mapflow plot` draws
DEMO = (  # its runs in the demo suite; `order` places them in the suite
    {"order": 100, "name": "cross_frame_halves-video", "options": {"generate": "3"}},
    {"order": 110, "name": "cross_frame_halves-frames", "variant": "frames", "options": {"generate": "3"}},
)


def run(ctx: StudyContext):
    layer_sets = halves(ctx.adapter.num_layers)
    ds = knockout_layer_sets(ctx, FLOWS, layer_sets)
    max_new = int(ctx.config.option("generate", "0"))
    if max_new > 0:
        decode = ctx.adapter.tokenizer.decode
        blocked = torch.from_numpy(Flow.parse("cross_frame").block_matrix(ctx.layout))
        texts = [decode(greedy_generate(ctx.adapter, ctx.prepared, max_new_tokens=max_new, blocked=blocked,
                                        layers=layers)) for layers in layer_sets.values()]
        ds["answer_text"] = xr.DataArray(np.asarray([texts], dtype=object), dims=("flow", "layers"))
        ds["clean_answer_text"] = ((), np.asarray(decode(greedy_generate(ctx.adapter, ctx.prepared,
                                                                         max_new_tokens=max_new)), dtype=object))
    return ds


# Its sections of `mapflow report` (mapflow.viz.report.study_sections): `order` places them in the page.
def report_section(w, stores):
    """Table 2 / Table B: accuracy after knocking out the first or the second half of the layers."""
    from mapflow.viz import tables

    for st in stores:
        s = w.section(f"First half vs second half, {st.model}", "Table 2 / Table B")
        table = tables.halves_table(st.ds)
        w.table(s, f"table2_halves_{st.model}", table, "Accuracy (%) after cross-frame knockout per layer set; "
                "drop in points and among originally correct samples")
        overall = table.loc["all"]
        w.reading(s, f"Over all tasks the first-half knockout costs {overall['first_half_drop_pts']:.1f} points and "
                     f"the second-half one {overall['second_half_drop_pts']:.1f}.")
        if "answer_text" in st.ds:
            w.table(s, f"table2_answers_{st.model}", tables.generated_answers(st.ds, limit=2),
                    "Answers generated greedily, clean and under each knockout")


REPORT = ({"order": 30, "section": report_section},)
