"""Cross-frame knockout in the first half, the second half and all layers (paper Table 2 / Table B).

One cell per layer set instead of a sweep. Accuracy after knockout is ``pred_knockout == answer_token``; the paper's
accuracy drop is taken among the originally correct samples.
"""

from mapflow.analysis import StudyContext, knockout_layer_sets

FLOWS = ("cross_frame",)


def halves(num_layers: int) -> dict[str, tuple[int, ...]]:
    middle = num_layers // 2
    return {"first_half": tuple(range(middle)), "second_half": tuple(range(middle, num_layers)),
            "all": tuple(range(num_layers))}


def run(ctx: StudyContext):
    return knockout_layer_sets(ctx, FLOWS, halves(ctx.adapter.num_layers))
