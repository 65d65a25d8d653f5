"""Study definitions. Each module defines ``run(ctx: mapflow.analysis.context.StudyContext) -> xarray.Dataset``.

The runner maps a study over samples and adds the ``sample`` dimension; a study only describes one sample.
"""
