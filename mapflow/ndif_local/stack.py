"""A single-node NDIF server on this machine: Redis, an S3 object store (moto), a Ray head and the NDIF API.

Everything listens on loopback (``--host`` moves the API and the object store elsewhere) on ports picked free at
start. Each stack has its own state directory (`state`: ``--home``, ``$MAPFLOW_NDIF_HOME`` or
``~/.cache/mapflow/ndif/<api port>``): ports, the process ids we started, logs, Ray's session files, and the
processes' own ``HOME`` and temp dirs, so nothing a stray ``ray.init`` leaves in ``~/.ray`` or ``/tmp/ray`` reaches
the stack, and two stacks never share a file. ``up`` creates the API token (0600, in the state directory) that every
request must carry, and a second one for Ray's own token authentication; Redis gets a password.

Every process the stack starts carries ``MAPFLOW_NDIF_STACK=<its state directory>`` in its environment (inherited
by everything it starts in turn). ``down`` stops exactly those: the recorded process groups, every process carrying
the tag, and their descendants, until none is left. It never stops anything by name, and never runs ``ray stop``
(which stops every Ray on the host).

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
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import MapflowError
from ..remote.settings import VIDEO_LLM_TASK, model_key_for
from .state import (  # noqa: F401  (re-exported: `stack` is the operator's one entry point)
    DEFAULT_BIND,
    STATE_FILE,
    StackState,
    _alive,
    _start_ticks,
    client_address,
    default_home,
    ours,
    read_token,
    register,
    registered_homes,
    running_stack_host,
    running_stacks,
    unregister,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTOR_DIR = Path(__file__).resolve().parent / "server"
ACTOR_CLASS = "mapflow_cpu_actor.CPUModelActor"
API_APP = "mapflow_api:app"  # ndif's API behind the token check (server/mapflow_api.py)
STACK_TAG = "MAPFLOW_NDIF_STACK"  # in every stack process's environment: its state directory
RAY_TOKEN_FILE = "ray_token"
SERVICES = ("redis", "moto", "ray", "api")  # start order; stopped in reverse
BIND_SERVICES = ("moto", "api")  # the listeners `ndif up --host` moves (clients need both: requests and results)


class StackError(MapflowError):
    """The local NDIF stack could not be started, reached or deployed to; the message says which log to read."""


def default_venv() -> Path:
    return Path(os.environ.get("MAPFLOW_NDIF_VENV") or REPO_ROOT / ".venv-ndif").expanduser()


# ---- ports and processes ----------------------------------------------------------------------------------------

PORT_NAMES = (
    "redis",
    "moto",
    "ray_gcs",
    "ray_client",
    "api",
    "node_manager",
    "object_manager",
    "runtime_env_agent",
    "dashboard_agent_http",
    "dashboard_agent_grpc",
    "metrics_export",
    "dashboard",
    "autoscaler_metrics",
    "dashboard_metrics",
)
WORKER_PORTS = 200


def free_ports(names=PORT_NAMES, api: int | None = None) -> dict[str, int]:
    """Distinct loopback ports nothing listens on now (``api`` fixed when given), plus a free-looking range for Ray's
    workers."""
    if api is not None and not _port_free(api):
        raise StackError(
            f"port {api} is in use (another stack? see `mapflow ndif status --port {api}`); pick another with --port"
        )
    sockets, ports = [], {}
    try:
        for name in names:
            if name == "api" and api is not None:
                ports[name] = api
                continue
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


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line) for every process we can read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(stat[1]), int(stat[3]), cmdline)
    return table


def _tagged(pid: int, tag: bytes) -> bool:
    try:
        return tag in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def stack_processes(state: StackState) -> set[int]:
    """Every live process of this stack: the recorded ones and their sessions, every process whose environment
    carries the stack's tag or whose command line names its state directory, and all their descendants. Never this
    process or its ancestors, and never a zombie."""
    table = _process_table()
    home = str(Path(state.home).resolve())
    tag = f"{STACK_TAG}={home}\0".encode()
    recorded = {state.pids[name] for name in state.pids if ours(state, name) is not None}
    roots = set(recorded)
    roots |= {
        pid for pid, (_, sid, cmdline) in table.items() if sid in recorded or home + "/" in cmdline or _tagged(pid, tag)
    }
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    protected, pid = set(), os.getpid()
    while pid > 1 and pid in table:
        protected.add(pid)
        pid = table[pid][0]
    protected.add(os.getpid())
    return {pid for pid in found - protected if _alive(pid)}


# ---- environment --------------------------------------------------------------------------------------------------


def server_env(state: StackState) -> dict[str, str]:
    ports, home, venv = state.ports, Path(state.home), Path(state.venv)
    secret = read_token(state)
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("NDIF_", "RAY_", "PYTHON", "MAPFLOW_"))
    }
    env.update(
        {
            STACK_TAG: str(home),  # how `down` finds every process of this stack, re-parented or not
            "HOME": str(home / "home"),  # a stray ~/.ray/auth_token (written by any ray.init) never reaches the stack
            "TMPDIR": str(home / "tmp"),
            "RAY_TMPDIR": str(home / "rt"),  # nor /tmp/ray's sessions
            "PATH": f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            "VIRTUAL_ENV": str(venv),
            "PYTHONPATH": str(ACTOR_DIR),  # Ray workers inherit it: the CPU actor must import in them
            "NDIF_HOME": str(home / "home"),
            "NDIF_REDIS_URL": f"redis://:{secret}@127.0.0.1:{ports['redis']}",
            "NDIF_OBJECT_STORE_URL": f"http://{client_address(state.bind)}:{ports['moto']}",
            "NDIF_OBJECT_STORE_ACCESS_KEY": "local",
            "NDIF_OBJECT_STORE_SECRET_KEY": "local",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "NDIF_RAY_ADDRESS": f"ray://127.0.0.1:{ports['ray_client']}",
            "NDIF_RAY_HEAD_PORT": str(ports["ray_gcs"]),
            "NDIF_RAY_TEMP_DIR": str(home / "ray"),
            "NDIF_API_PORT": str(ports["api"]),
            "NDIF_API_URL": state.host,
            "NDIF_DEFAULT_MODEL_ACTOR_CLASS": ACTOR_CLASS,
            "NDIF_DEFAULT_DTYPE": "float32",  # NDIF's default is bfloat16, which would not match a float32 local run
            "NDIF_DEFAULT_PADDING_BIAS": "0",
            "MAPFLOW_NDIF_TOKEN_FILE": str(state.token_file),  # read by server/mapflow_api.py
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(home / RAY_TOKEN_FILE),  # Ray's own token auth, on
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GRPC_ENABLE_FORK_SUPPORT": "0",  # NDIF's own start script sets it against a Ray-client fork race
            "RAY_USAGE_STATS_ENABLED": "0",
            # two metrics servers Ray puts on fixed ports (44217, 44227) unless told: a second stack would collide
            "AUTOSCALER_METRIC_PORT": str(ports.get("autoscaler_metrics", 0)),
            "DASHBOARD_METRIC_PORT": str(ports.get("dashboard_metrics", 0)),
            # single-node Ray: it keeps 127.0.0.1 as the node address instead of swapping in an outside one
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "OMP_NUM_THREADS": "1",
        }
    )
    if os.environ.get("MAPFLOW_NDIF_WEIGHT_CHECK"):  # read by the model actor (server/mapflow_cpu_actor.py)
        env["MAPFLOW_NDIF_WEIGHT_CHECK"] = os.environ["MAPFLOW_NDIF_WEIGHT_CHECK"]
    return env


LOOPBACK_SHIM = "loopback_bind.so"


def build_loopback_shim(home: Path) -> Path | None:
    """Compile ``server/loopback_bind.c`` into the state directory (a fraction of a second); None without a C
    compiler (then Ray's gRPC servers listen on every interface: `up` says so)."""
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    target = home / LOOPBACK_SHIM
    done = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(target), str(ACTOR_DIR / "loopback_bind.c"), "-ldl"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise StackError(f"building the loopback shim failed:\n{done.stderr[-2000:]}")
    return target


def _write_secret(path: Path) -> str:
    """A fresh random token in a new file only its owner can read."""
    secret = secrets.token_urlsafe(32)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secret)
    return secret


def _log(state: StackState, name: str):
    return open(Path(state.home, "logs", f"{name}.log"), "ab")


def _env_for(state: StackState, name: str) -> dict[str, str]:
    """The service's environment: with the loopback shim preloaded, except for the listeners ``--host`` moves."""
    env = server_env(state)
    shim = Path(state.home, LOOPBACK_SHIM)
    if shim.is_file() and not (name in BIND_SERVICES and state.bind != DEFAULT_BIND):
        env["LD_PRELOAD"] = str(shim)
    return env


def _spawn(state: StackState, name: str, argv: list[str]) -> int:
    """Start a long-running service in its own session (so its whole process group can be stopped)."""
    with _log(state, name) as log:
        process = subprocess.Popen(
            argv,
            env=_env_for(state, name),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=state.home,
        )
    state.pids[name] = process.pid
    state.start_ticks[name] = _start_ticks(process.pid)
    state.save()
    return process.pid


def _run(state: StackState, name: str, argv: list[str], timeout_s: float, extra_env=None) -> str:
    """Run a short command to completion; its output goes to its log and comes back."""
    try:
        done = subprocess.run(
            argv,
            env={**_env_for(state, name), **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            cwd=state.home,
        )
    except subprocess.TimeoutExpired as err:
        raise StackError(f"{name} did not finish within {timeout_s:.0f} s; see {state.home}/logs/{name}.log") from err
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


def _http_get(url: str, timeout_s: float = 5.0, headers=None):
    import httpx

    try:
        return httpx.get(url, timeout=timeout_s, headers=headers)
    except httpx.HTTPError:
        return None


def api_connected(host: str, token: str = "") -> bool:
    response = _http_get(f"{host}/connected", headers={"ndif-api-key": token} if token else None)
    return response is not None and response.status_code == 200 and response.json().get("status") == "connected"


# ---- up / down / status / deploy --------------------------------------------------------------------------------


def check_venv(venv: Path) -> None:
    missing = [tool for tool in ("ndif", "ray", "gunicorn", "moto_server") if not (venv / "bin" / tool).exists()]
    if missing:
        raise StackError(
            f"the NDIF server environment {venv} lacks {', '.join(missing)}: build it with "
            "`make ndif-venv` (or point MAPFLOW_NDIF_VENV / --venv at one)"
        )
    import shutil

    if shutil.which("redis-server") is None:
        raise StackError(
            "redis-server is not installed (Debian: apt-get install -y redis-server; `make ndif-venv` does it)"
        )


def resolve_home(home=None, port: int | None = None) -> Path:
    """The state directory ``--home`` / ``$MAPFLOW_NDIF_HOME`` / ``--port`` name, or the only registered stack's."""
    if home:
        return Path(home).expanduser().resolve()
    homes = registered_homes()
    if port is not None and port in homes and default_home() is None:  # wherever the stack on that port lives
        return homes[port]
    found = default_home(port)
    if found is not None:
        return Path(found).expanduser().resolve()
    if len(homes) == 1:
        return next(iter(homes.values()))
    if not homes:
        raise StackError("no local NDIF stack is registered (start one with `mapflow ndif up`)")
    raise StackError(
        f"{len(homes)} local NDIF stacks are registered (API ports {', '.join(map(str, sorted(homes)))}): "
        "say which with --port or --home"
    )


def _clean_leftovers(home: Path, progress) -> None:
    """Refuse a stack that runs whole; stop what is left of a half-dead one (an orphaned API worker holding the
    port, Ray daemons, stray clusters it started) and say so."""
    existing = StackState.load(home)
    if existing is None:
        return
    token = read_token(existing)
    if ours(existing, "api") is not None and ours(existing, "ray") is not None and api_connected(existing.host, token):
        raise StackError(
            f"a stack from {home} is already running at {existing.host}; `mapflow ndif down --home {home}` first"
        )
    leftovers = stack_processes(existing)
    if leftovers:
        stopped = down(home)
        progress(f"ndif: stopped {len(stopped)} leftover process(es) of a half-dead stack in {home}")


def up(
    home: Path | None = None,
    venv: Path | None = None,
    checkpoints=(),
    *,
    port: int | None = None,
    bind: str = DEFAULT_BIND,
    connect_timeout_s: float = 240.0,
    deploy_timeout_s: float = 300.0,
    progress=print,
    replicas: int = 1,
) -> StackState:
    """Start the stack and deploy ``checkpoints``; on any failure, stop what was started and raise.

    ``port``: the API's port (default: a free one); ``bind``: the address the API and the object store listen on
    (default loopback; Redis and Ray always stay on loopback). ``home`` defaults to ``$MAPFLOW_NDIF_HOME``, else
    ``~/.cache/mapflow/ndif/<api port>``."""
    venv = Path(venv or default_venv()).expanduser().resolve()
    check_venv(venv)
    if home or default_home() is not None:
        home = Path(home or default_home()).expanduser().resolve()
        _clean_leftovers(home, progress)
    if port is not None and port in registered_homes():
        _clean_leftovers(registered_homes()[port], progress)
    ports = free_ports(api=port)
    if home is None:
        home = Path(default_home(ports["api"])).expanduser().resolve()
        _clean_leftovers(home, progress)
    for sub in ("logs", "ray", "home", "tmp", "rt"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    state = StackState(home=str(home), venv=str(venv), ports=ports, started_at=time.time(), bind=bind)
    _write_secret(state.token_file)
    _write_secret(home / RAY_TOKEN_FILE)
    if build_loopback_shim(home) is None:
        progress(
            "ndif: WARNING no C compiler (cc): Ray's own servers will listen on every interface; install gcc "
            "for a loopback-only stack"
        )
    state.save()
    register(state)
    start = time.monotonic()
    token = read_token(state)

    def mark(step: str) -> None:
        state.timings_s[step] = round(time.monotonic() - start, 1)
        state.save()
        progress(f"ndif: {step} ({state.timings_s[step]:.0f} s)")

    try:
        ports = state.ports
        redis_conf = home / "redis.conf"  # the password in a 0600 file, not on a command line anyone can read
        fd = os.open(redis_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(f"requirepass {token}\n")
        _spawn(
            state,
            "redis",
            [
                "redis-server",
                str(redis_conf),
                "--bind",
                "127.0.0.1",
                "--port",
                str(ports["redis"]),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(home),
            ],
        )
        _spawn(state, "moto", [str(venv / "bin" / "moto_server"), "-H", bind, "-p", str(ports["moto"])])
        _wait("redis", lambda: _tcp_open(ports["redis"]), 30, state, "redis")
        _wait(
            "the object store",
            lambda: _http_get(f"http://{client_address(bind)}:{ports['moto']}/") is not None,
            60,
            state,
            "moto",
        )
        mark("redis and object store up")
        resources = json.dumps({"head": 10, "cuda_memory_bytes": 8_000_000_000, "cpu_memory_bytes": 8_000_000_000})
        _spawn(
            state,
            "ray",
            [
                str(venv / "bin" / "ray"),
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={ports['ray_gcs']}",
                "--num-cpus=4",
                "--num-gpus=1",
                f"--resources={resources}",
                "--object-store-memory=300000000",
                f"--ray-client-server-port={ports['ray_client']}",
                f"--node-manager-port={ports['node_manager']}",
                f"--object-manager-port={ports['object_manager']}",
                f"--runtime-env-agent-port={ports['runtime_env_agent']}",
                f"--dashboard-agent-listen-port={ports['dashboard_agent_http']}",
                f"--dashboard-agent-grpc-port={ports['dashboard_agent_grpc']}",
                f"--metrics-export-port={ports['metrics_export']}",
                f"--min-worker-port={ports['min_worker']}",
                f"--max-worker-port={ports['max_worker']}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={ports['dashboard']}",
                f"--temp-dir={home / 'ray'}",
                "--disable-usage-stats",
            ],
        )
        _wait("the Ray client server", lambda: _tcp_open(ports["ray_client"]), 120, state, "ray")
        mark("ray head up")
        # the second half of ndif's ray/start.sh: the controller runs as a detached Ray actor, this just launches it
        # (its ray.init(address="auto") is pointed at this stack's GCS: left to itself it may pick another stack's)
        _run(
            state,
            "controller",
            [str(venv / "bin" / "python"), "-m", "ndif.services.ray.deployments.controller.controller"],
            180,
            extra_env={"RAY_ADDRESS": f"127.0.0.1:{ports['ray_gcs']}"},
        )
        mark("controller launched")
        # ndif's api/start.sh, behind the token check and bound to `bind` (its gunicorn config says 0.0.0.0; the flag
        # wins)
        _spawn(
            state,
            "api",
            [
                str(venv / "bin" / "gunicorn"),
                "--config",
                "python:ndif.services.api.gunicorn_conf",
                "--bind",
                f"{bind}:{ports['api']}",
                API_APP,
            ],
        )
        _wait(
            "the NDIF API to connect to Ray", lambda: api_connected(state.host, token), connect_timeout_s, state, "api"
        )
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


def deploy(
    state: StackState, checkpoints, *, task: str = VIDEO_LLM_TASK, timeout_s: float = 300.0, replicas: int = 1
) -> list[str]:
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
        entries.append(
            {
                "checkpoint": str(path),
                "task": task,
                "model_key": key,
                "dtype": "float32",
                "size_bytes": model_size_bytes(path),
                "pinned": True,
                "replicas": replicas,
            }
        )
        keys.append(key)
    models_file = Path(state.home, "models.yaml")
    models_file.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    _run(state, "deploy", [str(Path(state.venv) / "bin" / "ndif"), "deploy", "-f", str(models_file)], timeout_s)
    for key, entry in zip(keys, entries):
        state.models[key] = entry["checkpoint"]
    state.save()
    return keys


def down(home: Path | None = None, grace_s: float = 5.0, settle_s: float = 30.0) -> list[int]:
    """Stop every process of the stack in ``home`` (SIGTERM, then SIGKILL after ``grace_s``), again and again until
    none is left (a dying Ray head may still start a worker); returns the pids that were signalled."""
    home = Path(home).expanduser().resolve() if home else resolve_home()
    state = StackState.load(home)
    if state is None:
        return []
    signalled: set[int] = set()
    deadline = time.monotonic() + settle_s
    while True:
        targets = stack_processes(state)  # listed before signalling: descendants get re-parented once a parent dies
        if not targets or time.monotonic() > deadline:
            break
        for name in reversed(SERVICES):
            pid = ours(state, name)
            if pid is not None:
                try:
                    os.killpg(pid, signal.SIGTERM)  # its own session: the group is what it started
                except (ProcessLookupError, PermissionError):
                    pass
        for pid in targets:
            try:
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        signalled |= targets
        ends = time.monotonic() + grace_s
        while time.monotonic() < ends and any(_alive(pid) for pid in targets):
            time.sleep(0.2)
        for pid in targets | stack_processes(state):
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        _reap(state)
        time.sleep(0.2)
    _reap(state)
    state.pids, state.start_ticks = {}, {}
    state.save()
    unregister(state)
    return sorted(signalled)


def _reap(state: StackState) -> None:
    for pid in state.pids.values():  # the ones this process started, if it did
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def status(home: Path | None = None) -> dict:
    """What runs, where, and which models the server reports."""
    home = Path(home).expanduser().resolve() if home else resolve_home()
    state = StackState.load(home)
    if state is None:
        return {"home": str(home), "running": False}
    processes = {name: {"pid": pid, "alive": ours(state, name) is not None} for name, pid in state.pids.items()}
    token = read_token(state)
    report = {
        "home": str(home),
        "host": state.host,
        "bind": state.bind,
        "running": any(p["alive"] for p in processes.values()),
        "processes": processes,
        "stack_processes": len(stack_processes(state)),
        "ports": state.ports,
        "timings_s": state.timings_s,
        "token_file": str(state.token_file),
        "connected": False,
        "deployments": {},
    }
    if report["running"] and api_connected(state.host, token):
        report["connected"] = True
        response = _http_get(f"{state.host}/status", timeout_s=60, headers={"ndif-api-key": token})
        if response is not None and response.status_code == 200:
            from ..remote.client import deployments_in_status

            report["deployments"] = {
                key: entry.get("application_state") for key, entry in deployments_in_status(response.json()).items()
            }
    return report
