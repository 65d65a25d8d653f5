"""Study layer: the per-sample analysis context a study's ``run(ctx)`` receives (`context`), the runner that
drives a study over samples into a store (`runner`), the resolution of a run's model, data, template and provenance
(`resolve`), concurrent remote samples (`inflight`) and interrupt handling (`interrupts`)."""
