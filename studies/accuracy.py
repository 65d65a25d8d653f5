"""Benchmark accuracy: the clean prediction at the last position, and whether it is the answer letter.

The same clean run every knockout study uses for its ``correct`` filter, so accuracy and analyses never disagree.
"""

import numpy as np
import xarray as xr

import mapflow as mf
from mapflow.analysis.context import StudyContext

OPTIONS = {}  # only the options every study takes (mapflow.analysis.option_checks.COMMON_OPTION_NAMES)


@mf.study(
    options=OPTIONS,
)
def run(ctx: StudyContext):
    clean = ctx.clean()
    return xr.Dataset(
        {
            **clean.correctness(),
            "p_base": ((), clean.p_base),
            "pred_base": ((), np.int64(clean.pred)),
            "answer_token": ((), np.int64(clean.gt_token)),
            "p_gt_base": ((), clean.p_gt_base),
        }
    )
