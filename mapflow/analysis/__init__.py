"""The analysis core: the per-sample context a study's ``run(ctx)`` receives and its methods (`context`, split by job
into `config`, `clean`, `knockouts` and `datasets`), a study's declaration (`declaration`: ``@mapflow.study``), the
runner that drives a study over samples into a store (`runner`), the resolution of a run's model, data, template and
provenance (`resolve`), the study catalog (`catalog`), concurrent samples (`inflight`) and interrupt handling
(`interrupts`). The studies themselves live in the top-level ``studies/`` folder (``mapflow.studies``)."""
