"""The report's "From the map to speed" section: every prune-eval store in the results directory, its figure, its
table and the verdict. Called from `mapflow.viz.report.build_report` with its `ReportWriter`."""

from __future__ import annotations

PRUNE_STUDY = "prune_eval"  # the study name prune-eval stores carry in their provenance


def pruning_sections(w, by_study, results_dir=None) -> None:
    from ..pruning.summary import verdict
    from .pruning import prune_figure, prune_table

    for st in by_study.get((PRUNE_STUDY, False), []):
        s = w.section(f"From the map to speed: pruning {st.model}", "beyond the paper")
        plan = ((st.provenance.get("config") or {}).get("prune") or {}).get("plan") or {}
        if plan:
            w.reading(
                s,
                f"Plan: {plan.get('label')} (rule {plan.get('rule')}"
                + (f", threshold {plan['threshold']:g} %" if plan.get("threshold") is not None else "")
                + f"): {plan.get('rule_text', '')}.",
            )
        w.figure(
            s,
            f"pruning_{st.model}",
            lambda st=st: prune_figure(st.ds),
            "Accuracy and agreement with the unpruned answer against the language model's prefill FLOPs: FastV-style "
            "pruning (drop the R least-attended video tokens after layer K) per K, the pathway plan (every video "
            "token dropped after the last layer that reads it)",
        )
        table = prune_table(st.ds)
        w.table(s, f"pruning_{st.model}", table, "Per method: accuracy, agreement, mean prefill FLOPs and wall time")
        w.reading(s, verdict(st.ds)["text"])
