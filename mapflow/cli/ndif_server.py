"""``mapflow ndif up | down | status | deploy | bench``: the command line of the local NDIF server operator
(`mapflow.ndif_local`)."""

from __future__ import annotations

import json


def cmd_ndif_up(args) -> int:
    from ..ndif_local import stack

    state = stack.up(args.home, args.venv, args.checkpoints, replicas=args.replicas, port=args.port, bind=args.host)
    print(
        f"NDIF at {state.host} (state in {state.home}, API token in {state.token_file}); deployed: "
        f"{', '.join(state.models.values()) or 'nothing'}"
    )
    print(
        f"run a study on it: mapflow run STUDY --remote --model CHECKPOINT --out OUT.zarr   |   stop: mapflow ndif "
        f"down --port {state.ports['api']}"
    )
    return 0


def cmd_ndif_down(args) -> int:
    from ..ndif_local import stack

    home = stack.resolve_home(args.home, args.port)
    stopped = stack.down(home)
    left = stack.stack_processes(stack.StackState.load(home)) if stack.StackState.load(home) else set()
    print(
        f"stopped {len(stopped)} process(es) of the stack in {home}" if stopped else f"nothing was running from {home}"
    )
    if left:
        print(f"{len(left)} process(es) of the stack would not stop: {sorted(left)}")
        return 1
    return 0


def cmd_ndif_status(args) -> int:
    from ..ndif_local import stack

    print(json.dumps(stack.status(stack.resolve_home(args.home, args.port)), indent=1))
    return 0


def cmd_ndif_deploy(args) -> int:
    from ..ndif_local import stack

    home = stack.resolve_home(args.home, args.port)
    state = stack.StackState.load(home)
    if state is None or stack.ours(state, "api") is None:
        raise stack.StackError(f"no local NDIF stack runs from {home}; start one with `mapflow ndif up`")
    for key in stack.deploy(state, args.checkpoints, replicas=args.replicas):
        print(f"deployed {key}")
    return 0


def add_ndif_parser(sub) -> None:
    ndif = sub.add_parser("ndif", help="a local single-node NDIF server: up | down | status | deploy")
    commands = ndif.add_subparsers(dest="ndif_command", required=True)
    for name, func, text in [
        (
            "up",
            cmd_ndif_up,
            "start Redis, S3 (moto), a Ray head and the NDIF API on loopback, then deploy the given checkpoints",
        ),
        ("down", cmd_ndif_down, "stop every process `up` started (by pid, never by name)"),
        ("status", cmd_ndif_status, "processes, ports, connection and deployed models"),
        ("deploy", cmd_ndif_deploy, "deploy local checkpoints on the running stack"),
    ]:
        command = commands.add_parser(name, help=text)
        command.add_argument(
            "--home", help="state directory (default $MAPFLOW_NDIF_HOME, else ~/.cache/mapflow/ndif/<api port>)"
        )
        command.add_argument("--port", type=int, help="the API's port: picks the stack (for `up`: default a free one)")
        if name in ("up", "deploy"):
            command.add_argument("checkpoints", nargs="*" if name == "up" else "+", help="local checkpoint dirs")
        if name == "up":
            command.add_argument("--venv", help="the server's environment (default .venv-ndif; `make ndif-venv`)")
            command.add_argument(
                "--host",
                default="127.0.0.1",
                help="address the API and the object store listen "
                "on (default 127.0.0.1, this machine only; see docs/security.md before changing it)",
            )
        if name in ("up", "deploy"):
            command.add_argument(
                "--replicas",
                type=int,
                default=1,
                help="model actors per checkpoint (NDIF's own "
                "replicas: requests in flight spread over them; default 1)",
            )
        command.set_defaults(func=func)

    command = commands.add_parser(
        "bench",
        help="a study locally and on the server, per sample: requests, bytes, wall time, remote/local, max |dp|",
    )
    add_ndif_bench_arguments(command)
    command.set_defaults(func=cmd_ndif_bench)


def add_ndif_bench_arguments(parser) -> None:
    parser.add_argument("--study", default="information_flow")
    parser.add_argument("--model", help="local checkpoint (default: the embedded organism-video)")
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--limit", type=int, default=1, help="samples per task")
    parser.add_argument("--tasks", nargs="*", help="benchmark tasks (default: all)")
    parser.add_argument("--concurrency", type=int, default=1, help="also run the remote sweep N samples at a time")
    parser.add_argument("--remote-batch", type=int, default=1, help="samples per request in the concurrent sweep")
    parser.add_argument("--trace-plan", action="store_true", help="also run the per-trace (naive) remote plan")
    parser.add_argument("--ndif-host", help="server URL (default: the local stack from `mapflow ndif up`)")


def cmd_ndif_bench(args) -> int:
    import torch

    from ..analysis.context import StudyConfig
    from ..analysis.runner import load_study
    from ..data.benchmarks import get_benchmark
    from ..embedded import default_data_dir, organism_dir
    from ..knockout.flows import Window
    from ..models import load_adapter
    from ..ndif_local.request_bench import bench, format_report
    from ..remote.settings import resolve_settings

    torch.set_num_threads(1)  # the server's actor runs single-threaded: same arithmetic, a fair comparison
    model_dir = args.model or organism_dir("video")
    adapter = load_adapter(model_dir)
    samples = get_benchmark("tvbench").loader(default_data_dir(), tasks=args.tasks, limit=args.limit, seed=0)
    template = adapter.prompt_template.name if adapter.prompt_template else "llava_mcqa"
    config = StudyConfig(window=Window("center", args.window), samples="all", prompt_template=template)
    settings = resolve_settings(host=args.ndif_host, local_model_dir=model_dir)
    report = bench(
        load_study(args.study),
        adapter,
        samples,
        config,
        settings,
        trace_plan=args.trace_plan,
        concurrency=args.concurrency,
        batch=args.remote_batch,
    )
    print(f"mapflow ndif bench: {args.study}, window {args.window}, {len(samples)} sample(s), {settings.host}")
    print(format_report(report))
    return 0
