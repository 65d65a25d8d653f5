"""Operate a local NDIF server: `stack` (``mapflow ndif up | down | status | deploy``), its `state` file, the
server-side actor files in ``server/`` (package data) and the measurement behind ``mapflow ndif bench``
(`request_bench`). The command lines are `mapflow.cli.ndif_server`.

The NDIF *client* is `mapflow.remote`; this package only starts and stops a server for it to talk to."""
