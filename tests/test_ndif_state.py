"""Without a server: where a local stack keeps its state, how the client finds its token, and how long a client
waits for a server that is gone."""

import os
import socket
import stat
import time
from pathlib import Path

import pytest

from mapflow.errors import MapflowError


@pytest.fixture
def user_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MAPFLOW_NDIF_HOME", raising=False)
    return tmp_path


def fake_running_stack(home, port):
    """A registered stack whose 'api' process is this test process (alive, with its own start time)."""
    from mapflow.ndif_local import state as st
    from mapflow.ndif_local.stack import _write_secret

    home.mkdir(parents=True)
    state = st.StackState(
        home=str(home),
        venv="unused",
        ports={"api": port},
        pids={"api": os.getpid()},
        start_ticks={"api": st._start_ticks(os.getpid())},
    )
    _write_secret(state.token_file)
    state.save()
    st.register(state)
    return state


def test_each_stack_has_its_own_home_per_port_unless_one_is_named(user_home, monkeypatch):
    from mapflow.ndif_local.state import default_home

    assert default_home(8011) == user_home / ".cache/mapflow/ndif/8011"
    assert default_home(8012) != default_home(8011)
    monkeypatch.setenv("MAPFLOW_NDIF_HOME", str(user_home / "mine"))
    assert default_home(8011) == default_home(8012) == user_home / "mine"


def test_the_client_finds_a_local_stacks_token_by_its_port_and_only_while_it_runs(user_home):
    from mapflow.ndif_local import state as st
    from mapflow.remote import resolve_settings

    first = fake_running_stack(user_home / "a", 40001)
    second = fake_running_stack(user_home / "b", 40002)
    assert stat.S_IMODE(first.token_file.stat().st_mode) == 0o600
    assert st.token_for_host("http://127.0.0.1:40001") == st.read_token(first) != st.read_token(second)
    assert st.token_for_host("http://localhost:40002") == st.read_token(second)
    assert st.token_for_host("http://example.org:40001") == ""  # never sent anywhere but this machine
    settings = resolve_settings(host="http://127.0.0.1:40002", model="m")
    assert settings.api_key == st.read_token(second)
    assert resolve_settings(host="http://127.0.0.1:40002", model="m", api_key="given").api_key == "given"
    with pytest.raises(MapflowError, match="2 local NDIF stacks run"):  # which one is the user's to say
        st.running_stack_host()
    st.unregister(second)
    assert st.running_stack_host() == first.host
    first.start_ticks["api"] += 1  # the pid now belongs to another process: the stack is gone
    first.save()
    assert st.token_for_host(first.host) == "" and st.running_stack_host() is None


def test_server_timeout_setting_from_the_environment_and_refused_when_not_positive(monkeypatch):
    from mapflow.remote import resolve_settings
    from mapflow.remote.settings import DEFAULT_SERVER_TIMEOUT_S

    assert DEFAULT_SERVER_TIMEOUT_S + 10.0 <= 60.0  # detection plus one HTTP limit stays within a minute
    assert resolve_settings(host="http://h:1", model="m").server_timeout_s == DEFAULT_SERVER_TIMEOUT_S
    monkeypatch.setenv("MAPFLOW_NDIF_SERVER_TIMEOUT", "12.5")
    assert resolve_settings(host="http://h:1", model="m").server_timeout_s == 12.5
    with pytest.raises(MapflowError, match="must be positive"):
        resolve_settings(host="http://h:1", model="m", server_timeout_s=-1)


def test_a_client_waiting_on_a_job_stops_once_the_server_stays_unreachable_for_the_timeout():
    from mapflow.remote import ServerUnreachable, resolve_settings
    from mapflow.remote.client import PollingBackend

    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = resolve_settings(host=f"http://127.0.0.1:{port}", model="m", server_timeout_s=1.5)
    backend = PollingBackend(settings)
    backend.job_id = "job-1"
    started = time.monotonic()
    with pytest.raises(ServerUnreachable, match="no usable answer for") as caught:
        backend._wait(None)
    waited = time.monotonic() - started
    assert settings.server_timeout_s <= waited <= settings.server_timeout_s + 2.0, waited
    assert "nothing was recorded as failed" in str(caught.value)


def test_the_operator_commands_find_a_stack_by_its_port_wherever_its_home_is(user_home):
    from mapflow.ndif_local.stack import StackError, resolve_home

    first = fake_running_stack(user_home / "custom" / "a", 40011)
    assert resolve_home(port=40011) == Path(first.home).resolve()
    assert resolve_home() == Path(first.home).resolve()  # the only registered stack
    fake_running_stack(user_home / "b", 40012)
    with pytest.raises(StackError, match="say which with --port or --home"):
        resolve_home()


def test_an_index_entry_of_a_stack_that_came_back_on_another_port_is_dropped(user_home):
    from mapflow.ndif_local import state as st

    stack = fake_running_stack(user_home / "a", 40021)
    stack.ports["api"] = 40022  # `ndif up` again in the same home, on another port
    stack.save()
    st.register(stack)
    assert st.registered_homes() == {40022: Path(stack.home).resolve()}
    assert not (user_home / ".cache/mapflow/ndif/by-port/40021").is_symlink()
