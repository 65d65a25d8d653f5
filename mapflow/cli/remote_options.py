"""``mapflow run --remote`` options: where the NDIF server is and how requests are planned, turned into the run's
backend by `mapflow.backends.choose_backend` (the one place every run picks it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..backends.ndif import DEFAULT_CONCURRENCY
from ..remote.settings import REMOTE_PLANS


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("remote execution on NDIF (see docs/remote.md)")
    group.add_argument("--remote", action="store_true", help="run every trace on an NDIF server")
    group.add_argument(
        "--ndif-host",
        help="server URL (else $MAPFLOW_NDIF_HOST, the config file, or the local stack from `mapflow ndif up`)",
    )
    group.add_argument("--ndif-api-key", help="API key (else $MAPFLOW_NDIF_API_KEY or the config file)")
    group.add_argument(
        "--remote-model",
        help="the key the server deployed the model under, or its repo id "
        "(default: the key `mapflow ndif deploy` gives --model)",
    )
    group.add_argument(
        "--remote-config",
        help="TOML file with host, api_key, model, timeout_s, max_result_mb (default ~/.config/mapflow/remote.toml)",
    )
    group.add_argument("--remote-timeout", type=float, help="seconds one remote trace may take (default 600)")
    group.add_argument(
        "--server-timeout",
        type=float,
        help="seconds the server may stay unreachable before the run stops, keeping what it stored (default 30)",
    )
    group.add_argument("--max-result-mb", type=float, help="largest result one remote trace may return (default 512)")
    group.add_argument(
        "--remote-plan",
        choices=REMOTE_PLANS,
        help="sample (default): a knockout study's whole sample "
        "in one request, the fast engine on the server; trace: one request per trace (naive plan)",
    )
    group.add_argument(
        "--concurrency",
        type=int,
        help=f"requests in flight at once (default {DEFAULT_CONCURRENCY}); results are still stored in sample order",
    )
    group.add_argument(
        "--remote-batch",
        type=int,
        help="samples per request under the sample plan (default 1); "
        "pays off when a sample computes faster than a request's fixed cost (small models)",
    )


def backend_from_args(args, model_dir: Path):
    """The run's backend (`mapflow.backends`): this process, or with ``--remote`` an NDIF server reached with the
    resolved `RemoteSettings`. ``--concurrency`` / ``--remote-batch`` without ``--remote`` are refused."""
    from ..backends import choose_backend

    settings = None
    if args.remote:
        from ..remote.settings import resolve_settings

        settings = resolve_settings(
            host=args.ndif_host,
            api_key=args.ndif_api_key,
            model=args.remote_model,
            local_model_dir=model_dir,
            timeout_s=args.remote_timeout,
            max_result_mb=args.max_result_mb,
            config_file=args.remote_config,
            plan=args.remote_plan,
            server_timeout_s=getattr(args, "server_timeout", None),
        )
    return choose_backend(remote=settings, concurrency=args.concurrency, batch=getattr(args, "remote_batch", None))
