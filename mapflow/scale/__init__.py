"""Scale out: one run's shards executed on a distributed engine (Dask), above the runner (`dask_executor.py`)."""
