"""A single-node NDIF server on this machine: Redis, an S3 object store (moto), a Ray head and the NDIF API.

Everything listens on loopback ports picked free at start (Ray also opens some wildcard listeners it cannot be told
not to). The state lives in one directory (``$MAPFLOW_NDIF_HOME``, default ``~/.cache/mapflow/ndif``): ports, the
process ids we started, logs, Ray's session files. ``down`` stops exactly what ``up`` started: the recorded process
groups, their descendants, and the processes whose command line names our private state directory (Ray's daemons).
It never stops anything by name, and never runs ``ray stop`` (which stops every Ray on the host).

The server runs from its own environment (``make ndif-venv`` builds ``.venv-ndif``; ndif 0.1.2 declares Python >= 3.12
but is installed on 3.11 with ``--no-deps --ignore-requires-python``). Without a GPU the model actor is
``server/mapflow_cpu_actor.py``, selected through NDIF's ``NDIF_DEFAULT_MODEL_ACTOR_CLASS``; Ray's node advertises one
logical GPU because NDIF's controller only places models on GPU nodes. Models are deployed up front with
``ndif deploy -f`` and an explicit ``size_bytes`` (NDIF 0.1.2's on-demand deploy fails with nnsight 0.8.1).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import MapflowError
from ..remote.config import VIDEO_LLM_TASK, model_key_for
from .state import (  # noqa: F401  (re-exported: `stack` is the operator's one entry point)
    STATE_FILE,
    StackState,
    _alive,
    _start_ticks,
    default_home,
    ours,
    running_stack_host,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTOR_DIR = Path(__file__).resolve().parent / "server"
ACTOR_CLASS = "mapflow_cpu_actor.CPUModelActor"
SERVICES = ("redis", "moto", "ray", "api")  # start order; stopped in reverse


class StackError(MapflowError):
    """The local NDIF stack could not be started, reached or deployed to; the message says which log to read."""


def default_venv() -> Path:
    return Path(os.environ.get("MAPFLOW_NDIF_VENV") or REPO_ROOT / ".venv-ndif").expanduser()


# ---- ports and processes ----------------------------------------------------------------------------------------

PORT_NAMES = ("redis", "moto", "ray_gcs", "ray_client", "api", "node_manager", "object_manager", "runtime_env_agent",
              "dashboard_agent_http", "dashboard_agent_grpc", "metrics_export", "dashboard")
WORKER_PORTS = 200


def free_ports(names=PORT_NAMES) -> dict[str, int]:
    """Distinct loopback ports nothing listens on now, plus a free-looking range for Ray's workers."""
    sockets, ports = [], {}
    try:
        for name in names:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports[name] = sock.getsockname()[1]
    finally:
        for sock in sockets:
            sock.close()
    taken = set(ports.values())
    for _ in range(50):
        base = random.randrange(30000, 60000 - WORKER_PORTS)
        span = range(base, base + WORKER_PORTS)
        if not taken & set(span) and all(_port_free(p) for p in span[::20]):
            ports["min_worker"], ports["max_worker"] = base, base + WORKER_PORTS - 1
            return ports
    raise StackError("found no free range of ports for Ray's workers")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every process we can read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        table[int(entry.name)] = (int(stat.rsplit(") ", 1)[1].split()[1]), cmdline)
    return table


def stack_processes(state: StackState) -> set[int]:
    """Every live process of this stack: the recorded ones, the ones naming our private state directory, and all
    their descendants. Never this process or its ancestors."""
    table = _process_table()
    marker = str(Path(state.home).resolve()) + "/"
    roots = {pid for pid in (ours(state, name) for name in state.pids) if pid is not None}
    roots |= {pid for pid, (_, cmdline) in table.items() if marker in cmdline}
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    protected, pid = set(), os.getpid()
    while pid > 1 and pid in table:
        protected.add(pid)
        pid = table[pid][0]
    protected.add(os.getpid())
    return found - protected


# ---- environment --------------------------------------------------------------------------------------------------

def server_env(state: StackState) -> dict[str, str]:
    ports, home, venv = state.ports, Path(state.home), Path(state.venv)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("NDIF_", "RAY_", "PYTHON"))}
    env.update({
        "PATH": f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        "VIRTUAL_ENV": str(venv),
        "PYTHONPATH": str(ACTOR_DIR),  # Ray workers inherit it: the CPU actor must import in them
        "NDIF_HOME": str(home / "home"),
        "NDIF_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}",
        "NDIF_OBJECT_STORE_URL": f"http://127.0.0.1:{ports['moto']}",
        "NDIF_OBJECT_STORE_ACCESS_KEY": "local", "NDIF_OBJECT_STORE_SECRET_KEY": "local",
        "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
        "NDIF_RAY_ADDRESS": f"ray://127.0.0.1:{ports['ray_client']}",
        "NDIF_RAY_HEAD_PORT": str(ports["ray_gcs"]),
        "NDIF_RAY_TEMP_DIR": str(home / "ray"),
        "NDIF_API_PORT": str(ports["api"]), "NDIF_API_URL": state.host,
        "NDIF_DEFAULT_MODEL_ACTOR_CLASS": ACTOR_CLASS,
        "NDIF_DEFAULT_DTYPE": "float32",  # NDIF's default is bfloat16, which would not match a float32 local run
        "NDIF_DEFAULT_PADDING_BIAS": "0",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "GRPC_ENABLE_FORK_SUPPORT": "0",  # NDIF's own start script sets it against a Ray-client fork race
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
    })
    return env


def _log(state: StackState, name: str):
    return open(Path(state.home, "logs", f"{name}.log"), "ab")


def _spawn(state: StackState, name: str, argv: list[str]) -> int:
    """Start a long-running service in its own session (so its whole process group can be stopped)."""
    with _log(state, name) as log:
        process = subprocess.Popen(argv, env=server_env(state), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=state.home)
    state.pids[name] = process.pid
    state.start_ticks[name] = _start_ticks(process.pid)
    state.save()
    return process.pid


def _run(state: StackState, name: str, argv: list[str], timeout_s: float) -> str:
    """Run a short command to completion; its output goes to its log and comes back."""
    try:
        done = subprocess.run(argv, env=server_env(state), capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, cwd=state.home)
    except subprocess.TimeoutExpired as err:
        raise StackError(f"{name} did not finish within {timeout_s:.0f} s; see {state.home}/logs/{name}.log") \
            from err
    output = done.stdout + done.stderr
    with _log(state, name) as log:
        log.write(output.encode())
    if done.returncode != 0:
        raise StackError(f"{name} failed (exit {done.returncode}):\n{output[-3000:]}")
    return output


def _wait(what: str, check, timeout_s: float, state: StackState, log_name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}; see {state.home}/logs/{log_name}.log")


def _tcp_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_get(url: str, timeout_s: float = 5.0):
    import httpx

    try:
        return httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError:
        return None


def api_connected(host: str) -> bool:
    response = _http_get(f"{host}/connected")
    return response is not None and response.status_code == 200 and response.json().get("status") == "connected"


# ---- up / down / status / deploy --------------------------------------------------------------------------------

def check_venv(venv: Path) -> None:
    missing = [tool for tool in ("ndif", "ray", "gunicorn", "moto_server") if not (venv / "bin" / tool).exists()]
    if missing:
        raise StackError(f"the NDIF server environment {venv} lacks {', '.join(missing)}: build it with "
                         "`make ndif-venv` (or point MAPFLOW_NDIF_VENV / --venv at one)")
    import shutil

    if shutil.which("redis-server") is None:
        raise StackError("redis-server is not installed (Debian: apt-get install -y redis-server; `make ndif-venv` "
                         "does it)")


def up(home: Path | None = None, venv: Path | None = None, checkpoints=(), *, connect_timeout_s: float = 240.0,
       deploy_timeout_s: float = 300.0, progress=print, replicas: int = 1) -> StackState:
    """Start the stack and deploy ``checkpoints``; on any failure, stop what was started and raise."""
    home = Path(home or default_home()).expanduser().resolve()
    venv = Path(venv or default_venv()).expanduser().resolve()
    check_venv(venv)
    existing = StackState.load(home)
    if existing is not None and any(ours(existing, name) for name in existing.pids):
        raise StackError(f"a stack from {home} is already running at {existing.host}; `mapflow ndif down` first")
    for sub in ("logs", "ray", "home"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    state = StackState(home=str(home), venv=str(venv), ports=free_ports(), started_at=time.time())
    state.save()
    start = time.monotonic()

    def mark(step: str) -> None:
        state.timings_s[step] = round(time.monotonic() - start, 1)
        state.save()
        progress(f"ndif: {step} ({state.timings_s[step]:.0f} s)")

    try:
        ports = state.ports
        _spawn(state, "redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(ports["redis"]), "--save", "",
                                "--appendonly", "no", "--dir", str(home)])
        _spawn(state, "moto", [str(venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(ports["moto"])])
        _wait("redis", lambda: _tcp_open(ports["redis"]), 30, state, "redis")
        _wait("the object store", lambda: _http_get(f"http://127.0.0.1:{ports['moto']}/") is not None, 60, state,
              "moto")
        mark("redis and object store up")
        resources = json.dumps({"head": 10, "cuda_memory_bytes": 8_000_000_000, "cpu_memory_bytes": 8_000_000_000})
        _spawn(state, "ray", [
            str(venv / "bin" / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
            f"--port={ports['ray_gcs']}", "--num-cpus=4", "--num-gpus=1", f"--resources={resources}",
            "--object-store-memory=300000000", f"--ray-client-server-port={ports['ray_client']}",
            f"--node-manager-port={ports['node_manager']}", f"--object-manager-port={ports['object_manager']}",
            f"--runtime-env-agent-port={ports['runtime_env_agent']}",
            f"--dashboard-agent-listen-port={ports['dashboard_agent_http']}",
            f"--dashboard-agent-grpc-port={ports['dashboard_agent_grpc']}",
            f"--metrics-export-port={ports['metrics_export']}",
            f"--min-worker-port={ports['min_worker']}", f"--max-worker-port={ports['max_worker']}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={ports['dashboard']}",
            f"--temp-dir={home / 'ray'}", "--disable-usage-stats"])
        _wait("the Ray client server", lambda: _tcp_open(ports["ray_client"]), 120, state, "ray")
        mark("ray head up")
        # the second half of ndif's ray/start.sh: the controller runs as a detached Ray actor, this just launches it
        _run(state, "controller", [str(venv / "bin" / "python"), "-m",
                                   "ndif.services.ray.deployments.controller.controller"], 180)
        mark("controller launched")
        # ndif's api/start.sh, bound to loopback (its gunicorn config says 0.0.0.0; the flag wins)
        _spawn(state, "api", [str(venv / "bin" / "gunicorn"), "--config", "python:ndif.services.api.gunicorn_conf",
                              "--bind", f"127.0.0.1:{ports['api']}", "ndif.services.api.app:app"])
        _wait("the NDIF API to connect to Ray", lambda: api_connected(state.host), connect_timeout_s, state, "api")
        mark("API connected")
        if checkpoints:
            deploy(state, checkpoints, timeout_s=deploy_timeout_s, replicas=replicas)
            mark("models deployed")
    except BaseException:
        down(home)
        raise
    return state


def model_size_bytes(checkpoint: Path) -> int:
    weights = list(checkpoint.glob("*.safetensors")) + list(checkpoint.glob("*.bin"))
    if not weights:
        raise StackError(f"{checkpoint} holds no *.safetensors or *.bin weights")
    return sum(f.stat().st_size for f in weights)


def deploy(state: StackState, checkpoints, *, task: str = VIDEO_LLM_TASK, timeout_s: float = 300.0,
           replicas: int = 1) -> list[str]:
    """Deploy local checkpoint directories under the keys `config.model_key_for` mints for them, ``replicas`` model
    actors each (NDIF spreads requests over them; each actor runs on one of Ray's CPUs); returns the keys."""
    import yaml

    if replicas < 1:
        raise StackError(f"replicas must be at least 1, got {replicas}")
    entries, keys = [], []
    for checkpoint in checkpoints:
        path = Path(checkpoint).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise StackError(f"{path} is not a checkpoint directory (no config.json)")
        key = model_key_for(str(path), task=task)
        entries.append({"checkpoint": str(path), "task": task, "model_key": key, "dtype": "float32",
                        "size_bytes": model_size_bytes(path), "pinned": True, "replicas": replicas})
        keys.append(key)
    models_file = Path(state.home, "models.yaml")
    models_file.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    _run(state, "deploy", [str(Path(state.venv) / "bin" / "ndif"), "deploy", "-f", str(models_file)], timeout_s)
    for key, entry in zip(keys, entries):
        state.models[key] = entry["checkpoint"]
    state.save()
    return keys


def down(home: Path | None = None, grace_s: float = 5.0) -> list[int]:
    """Stop every process of the stack in ``home``; returns the pids that were signalled."""
    home = Path(home or default_home()).expanduser().resolve()
    state = StackState.load(home)
    if state is None:
        return []
    targets = stack_processes(state)  # listed before signalling: descendants get re-parented once a parent dies
    for name in reversed(SERVICES):
        pid = ours(state, name)
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGTERM)  # its own session: the group is exactly what we started
            except (ProcessLookupError, PermissionError):
                pass
    for pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in targets):
        time.sleep(0.2)
    for pid in targets | stack_processes(state):
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for pid in state.pids.values():  # reap the ones this process started, if it did
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    state.pids, state.start_ticks = {}, {}
    state.save()
    return sorted(targets)


def status(home: Path | None = None) -> dict:
    """What runs, where, and which models the server reports."""
    home = Path(home or default_home()).expanduser().resolve()
    state = StackState.load(home)
    if state is None:
        return {"home": str(home), "running": False}
    processes = {name: {"pid": pid, "alive": ours(state, name) is not None} for name, pid in state.pids.items()}
    report = {"home": str(home), "host": state.host, "running": any(p["alive"] for p in processes.values()),
              "processes": processes, "ports": state.ports, "timings_s": state.timings_s,
              "connected": False, "deployments": {}}
    if report["running"] and api_connected(state.host):
        report["connected"] = True
        response = _http_get(f"{state.host}/status", timeout_s=60)
        if response is not None and response.status_code == 200:
            from ..remote.client import deployments_in_status

            report["deployments"] = {key: entry.get("application_state")
                                     for key, entry in deployments_in_status(response.json()).items()}
    return report
