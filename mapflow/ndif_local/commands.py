"""``mapflow run --remote`` options and ``mapflow ndif up | down | status | deploy``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import MapflowError
from ..remote.config import REMOTE_PLANS


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("remote execution on NDIF (see README)")
    group.add_argument("--remote", action="store_true", help="run every trace on an NDIF server")
    group.add_argument("--ndif-host", help="server URL (else $MAPFLOW_NDIF_HOST, the config file, or the local "
                                           "stack from `mapflow ndif up`)")
    group.add_argument("--ndif-api-key", help="API key (else $MAPFLOW_NDIF_API_KEY or the config file)")
    group.add_argument("--remote-model", help="the key the server deployed the model under, or its repo id "
                                              "(default: the key `mapflow ndif deploy` gives --model)")
    group.add_argument("--remote-config", help="TOML file with host, api_key, model, timeout_s, max_result_mb "
                                               "(default ~/.config/mapflow/remote.toml)")
    group.add_argument("--remote-timeout", type=float, help="seconds one remote trace may take (default 600)")
    group.add_argument("--max-result-mb", type=float, help="largest result one remote trace may return (default 512)")
    group.add_argument("--remote-plan", choices=REMOTE_PLANS, help="sample (default): a knockout study's whole sample "
                       "in one request, the fast engine on the server; trace: one request per trace (naive plan)")
    group.add_argument("--concurrency", type=int, help=f"samples in flight at once (default {DEFAULT_CONCURRENCY}); "
                       "results are still stored in sample order")


DEFAULT_CONCURRENCY = 2  # two requests keep one server replica busy while the other's result travels


def concurrency_from_args(args) -> int:
    if args.concurrency is None:
        return DEFAULT_CONCURRENCY if args.remote else 1
    if args.concurrency < 1:
        raise MapflowError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.concurrency > 1 and not args.remote:
        raise MapflowError("--concurrency applies to remote runs (--remote); a local run measures one sample at a time")
    return args.concurrency


def remote_settings_from_args(args, model_dir: Path):
    """None for a local run; else the resolved `RemoteSettings`."""
    if not args.remote:
        return None
    from ..remote.config import resolve_settings

    return resolve_settings(host=args.ndif_host, api_key=args.ndif_api_key, model=args.remote_model,
                            local_model_dir=model_dir, timeout_s=args.remote_timeout,
                            max_result_mb=args.max_result_mb, config_file=args.remote_config,
                            plan=args.remote_plan)


def cmd_ndif_up(args) -> int:
    from . import stack

    state = stack.up(args.home, args.venv, args.checkpoints, replicas=args.replicas)
    print(f"NDIF at {state.host} (state in {state.home}); deployed: {', '.join(state.models.values()) or 'nothing'}")
    print(f"run a study on it: mapflow run STUDY --remote --model CHECKPOINT --out OUT.zarr   |   stop: mapflow ndif "
          f"down{' --home ' + str(args.home) if args.home else ''}")
    return 0


def cmd_ndif_down(args) -> int:
    from . import stack

    stopped = stack.down(args.home)
    print(f"stopped {len(stopped)} process(es)" if stopped else "nothing was running")
    return 0


def cmd_ndif_status(args) -> int:
    from . import stack

    print(json.dumps(stack.status(args.home), indent=1))
    return 0


def cmd_ndif_deploy(args) -> int:
    from . import stack

    home = Path(args.home or stack.default_home()).expanduser().resolve()
    state = stack.StackState.load(home)
    if state is None or stack.ours(state, "api") is None:
        raise stack.StackError(f"no local NDIF stack runs from {home}; start one with `mapflow ndif up`")
    for key in stack.deploy(state, args.checkpoints, replicas=args.replicas):
        print(f"deployed {key}")
    return 0


def add_ndif_parser(sub) -> None:
    ndif = sub.add_parser("ndif", help="a local single-node NDIF server: up | down | status | deploy")
    commands = ndif.add_subparsers(dest="ndif_command", required=True)
    for name, func, text in [("up", cmd_ndif_up, "start Redis, S3 (moto), a Ray head and the NDIF API on loopback, "
                                                 "then deploy the given checkpoints"),
                             ("down", cmd_ndif_down, "stop every process `up` started (by pid, never by name)"),
                             ("status", cmd_ndif_status, "processes, ports, connection and deployed models"),
                             ("deploy", cmd_ndif_deploy, "deploy local checkpoints on the running stack")]:
        command = commands.add_parser(name, help=text)
        command.add_argument("--home", help="state directory (default $MAPFLOW_NDIF_HOME or ~/.cache/mapflow/ndif)")
        if name in ("up", "deploy"):
            command.add_argument("checkpoints", nargs="*" if name == "up" else "+", help="local checkpoint dirs")
        if name == "up":
            command.add_argument("--venv", help="the server's environment (default .venv-ndif; `make ndif-venv`)")
        if name in ("up", "deploy"):
            command.add_argument("--replicas", type=int, default=1, help="model actors per checkpoint (NDIF's own "
                                 "replicas: requests in flight spread over them; default 1)")
        command.set_defaults(func=func)
    from .bench import add_bench_arguments, cmd_bench

    command = commands.add_parser("bench", help="a study locally and on the server, per sample: requests, bytes, "
                                                "wall time, remote/local, max |dp|")
    add_bench_arguments(command)
    command.set_defaults(func=cmd_bench)
