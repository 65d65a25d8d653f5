"""Operate a local NDIF server: `stack` (``mapflow ndif up | down | status | deploy``), the server-side actor
files in ``server/`` (package data), the ``ndif`` commands (`commands`) and ``mapflow ndif bench`` (`bench`).

The NDIF *client* is `mapflow.remote`; this package only starts and stops a server for it to talk to."""
