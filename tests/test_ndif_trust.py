"""The local NDIF stack's trust model: one client cannot harm another (docs/security.md).

One stack for the module: the token it requires, its listeners, then hostile requests (files, processes, threads,
the network, patched classes, the deployed weights), each refused, and the numbers of an ordinary run after them
equal to the ones the fresh server gave before them, bit for bit.
"""

import os
import stat
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import xarray as xr
from ndif_stacks import is_loopback, listening_sockets, new_home, require_server_env, stand_up

# one local NDIF stack at a time, each stood up once: all stack tests run in one group on one xdist worker
pytestmark = [pytest.mark.server, pytest.mark.xdist_group("ndif_stack")]

TASKS = ["moving_direction"]
SERVER_DIR = Path(__file__).resolve().parents[1] / "mapflow" / "ndif_local" / "server"


@pytest.fixture(scope="module")
def trust_stack():
    from mapflow.ndif_local import stack

    require_server_env()
    reuse = os.environ.get("MAPFLOW_TEST_NDIF_HOME")  # a stack already up (`mapflow ndif up`), kept up afterwards
    if reuse and stack.running_stack_host(reuse):
        yield stack.StackState.load(Path(reuse).expanduser().resolve())
        return
    home = new_home()
    try:
        yield stand_up(home)
    finally:
        stack.down(home)


@pytest.fixture(scope="module")
def organism():
    import torch

    from mapflow.embedded import organism_dir
    from mapflow.models import load_adapter

    torch.set_num_threads(1)  # the server's actor runs single-threaded: same reduction order, same bits
    return load_adapter(organism_dir("video"))


@pytest.fixture(scope="module")
def samples():
    from mapflow.data.benchmarks import get_benchmark
    from mapflow.embedded import default_data_dir

    return get_benchmark("tvbench").loader(default_data_dir(), tasks=TASKS, limit=1, seed=0)


def settings_for(state, **overrides):
    from mapflow.embedded import organism_dir
    from mapflow.remote import resolve_settings

    return replace(resolve_settings(host=state.host, local_model_dir=organism_dir("video")), **overrides)


def run(study, organism, samples, out, state):
    from mapflow.analysis.context import StudyConfig
    from mapflow.analysis.runner import load_study, run_study
    from mapflow.knockout.flows import Window

    config = StudyConfig(window=Window("center", 3), samples="all", prompt_template="organism_mcqa")
    return run_study(
        load_study(study) if isinstance(study, str) else study,
        organism,
        samples,
        out,
        config=config,
        provenance={
            "study": study if isinstance(study, str) else "hostile",
            "model": {"name": "organism-video"},
            "config": {},
        },
        remote=settings_for(state),
        concurrency=1,
        progress=False,
    )


def test_the_api_refuses_requests_without_the_stack_token(trust_stack):
    from mapflow.remote import AuthRefused
    from mapflow.remote.client import check_server

    token_file = trust_stack.token_file
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600  # only the user who started the stack reads it
    token = token_file.read_text().strip()
    assert len(token) >= 32
    for headers in (None, {"ndif-api-key": "not-the-token"}, {"ndif-api-key": token[:-1]}):
        assert httpx.get(f"{trust_stack.host}/connected", headers=headers, timeout=10).status_code == 401
        assert (
            httpx.post(
                f"{trust_stack.host}/request", headers=headers, timeout=10, files={"blob": ("request", b"x")}
            ).status_code
            == 401
        )
    assert httpx.get(f"{trust_stack.host}/connected", headers={"ndif-api-key": token}, timeout=10).status_code == 200
    settings = settings_for(trust_stack)
    assert settings.api_key == token  # the client found the local stack's token by itself
    with pytest.raises(AuthRefused, match="refused our API key"):
        check_server(replace(settings, api_key="not-the-token"))


def test_every_listener_of_the_stack_is_on_loopback(trust_stack):
    from mapflow.ndif_local import stack

    processes = stack.stack_processes(trust_stack)
    sockets = listening_sockets(processes)
    # the API, Redis, the object store, Ray's GCS, raylet, client server, dashboard and agents, the model actor
    assert len(sockets) >= 8, sockets
    assert {trust_stack.ports[name] for name in ("api", "redis", "moto", "ray_gcs", "ray_client", "dashboard")} <= {
        port for _, _, port in sockets
    }
    outside = [(pid, address, port) for pid, address, port in sockets if not is_loopback(address)]
    assert outside == [], f"listening beyond loopback: {outside}"


HOSTILE = {
    "file_write": ("open({target!r}, 'w').write('written by a request')", "writing the file"),
    "file_read": ("secret = open('/etc/hostname').read()", "reading the file"),
    "process": ("import subprocess; subprocess.run(['touch', {target!r}])", "starting processes"),
    "thread": ("import threading; threading.Thread(target=print).start()", "starting threads"),
    "network": ("import socket; socket.create_connection(('127.0.0.1', {api_port}))", "network access"),
    "patch_class": (
        "import torch; torch.nn.Linear.forward = lambda self, x: x * 0",
        "replaced the model's code (Linear.forward",
    ),
    "weights": ("ctx.adapter.lm_head.weight.data.mul_(2.0)", "wrote to the deployed model's weights (lm_head"),
}


def hostile_study(tmp_path, name, statement):
    path = tmp_path / f"hostile_{name}.py"
    path.write_text(
        textwrap.dedent("""
        import xarray as xr

        def run(ctx):
            with ctx.trace():
                {statement}
                logits = ctx.adapter.lm_head.output.save()
            return xr.Dataset({{"value": ((), float(logits.sum()))}})
    """).format(statement=statement)
    )
    from mapflow.analysis.runner import load_study

    return load_study(str(path))


def test_hostile_requests_are_refused_and_the_next_client_sees_a_fresh_servers_numbers(
    trust_stack, organism, samples, tmp_path
):
    from mapflow.results.store import ResultStore

    run("information_flow", organism, samples, tmp_path / "fresh.zarr", trust_stack)  # the fresh server's numbers
    target = tmp_path / "written-by-request"
    for name, (statement, refusal) in HOSTILE.items():
        study = hostile_study(tmp_path, name, statement.format(target=str(target), api_port=trust_stack.ports["api"]))
        summary = run(study, organism, samples, tmp_path / f"{name}.zarr", trust_stack)
        assert list(summary.failed) == [samples[0].sample_id] and summary.done == [], name
        reason = ResultStore(tmp_path / f"{name}.zarr").failed_samples()[samples[0].sample_id]["reason"]
        assert reason.startswith("RemoteJobFailed") and refusal in reason, (name, reason)
        assert not target.exists(), name
    assert not any(Path(trust_stack.home).glob("**/written-by-request"))  # nor in the server's working directory
    run("information_flow", organism, samples, tmp_path / "after.zarr", trust_stack)
    fresh, after = xr.open_zarr(tmp_path / "fresh.zarr").load(), xr.open_zarr(tmp_path / "after.zarr").load()
    assert fresh.knocked_out.values.all()
    for variable in fresh.data_vars:
        assert np.array_equal(
            fresh[variable].values, after[variable].values, equal_nan=fresh[variable].dtype.kind == "f"
        ), variable


def test_the_weight_check_costs_little_next_to_a_request(trust_stack, organism, samples, tmp_path):
    """The digest the actor takes of every parameter and buffer after each request, timed on the organism here (the
    same code, the same weights), against the wall time of one sample request."""
    sys.path.insert(0, str(SERVER_DIR))
    try:
        from mapflow_guard import tensor_digests
    finally:
        sys.path.remove(str(SERVER_DIR))
    module = organism.hf_model
    times = []
    for _ in range(5):
        started = time.perf_counter()
        tensor_digests(module)
        times.append(time.perf_counter() - started)
    check_s = float(np.median(times))
    started = time.perf_counter()
    run("information_flow", organism, samples, tmp_path / "timed.zarr", trust_stack)
    request_s = time.perf_counter() - started
    parameters = sum(t.numel() for t in module.parameters())
    print(f"\nweight check: {check_s * 1e3:.2f} ms for {parameters} parameters; one sample request: {request_s:.2f} s")
    assert check_s < 0.05 * request_s


def test_the_guard_refuses_each_operation_and_spots_a_changed_weight_in_place():
    """The guard on its own, in a fresh interpreter (its audit hook cannot be removed once added)."""
    script = textwrap.dedent(f"""
        import socket, subprocess, sys, tempfile, threading
        import torch
        sys.path.insert(0, {str(SERVER_DIR)!r})
        from mapflow_guard import CodeGuard, WeightsGuard, restricted

        refused = []
        probe = tempfile.gettempdir() + "/mf-guard-probe"
        attempts = {{
            "write": lambda: open(probe, "w"),
            "read": lambda: open("/etc/hostname").read(),
            "process": lambda: subprocess.run(["true"]),
            "thread": lambda: threading.Thread(target=print).start(),
            "socket": lambda: socket.socket(),
        }}
        for name, attempt in attempts.items():
            with restricted():
                try:
                    attempt()
                except PermissionError:
                    refused.append(name)
        with restricted():
            import json  # reading Python's own files stays allowed
        open(probe, "w").close()  # outside a request nothing is refused
        layer = torch.nn.Linear(4, 4)
        guard, code = WeightsGuard(layer), CodeGuard(layer)
        unchanged = guard.changed(layer), code.restore_changed()
        layer.weight.data[0, 0] += 1e-7  # the smallest change still counts
        forward = torch.nn.Linear.forward
        torch.nn.Linear.forward = lambda self, x: x * 0
        torch.nn.Linear.extra = 1
        patched = code.restore_changed()
        assert torch.nn.Linear.forward is forward and not hasattr(torch.nn.Linear, "extra")
        print(refused, unchanged, guard.changed(layer), patched)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "['write', 'read', 'process', 'thread', 'socket'] ([], []) ['weight'] ['Linear.forward', 'Linear.extra']"
    )
