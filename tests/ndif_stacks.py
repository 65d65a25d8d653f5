"""Standing up local NDIF stacks for the trust and fault tests (the `server` marker): skip without the server
environment, except under CI (CI=true), where a missing server is a failure."""

import atexit
import ipaddress
import os
import tempfile
from pathlib import Path

import pytest


def require_server_env():
    from mapflow.ndif_local import stack

    try:
        stack.check_venv(stack.default_venv())
    except stack.StackError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the server tests, but the NDIF stack cannot be provisioned: {err}")
        pytest.skip(f"NO NDIF SERVER TESTS: {err}")


def new_home() -> str:
    return tempfile.mkdtemp(prefix="mf-ndif-")  # short: Ray's unix socket paths live under it


def stand_up(home, **kwargs):
    """A stack with the organism deployed, stopped at interpreter exit whatever happens to the test."""
    from mapflow.embedded import organism_dir
    from mapflow.ndif_local import stack

    atexit.register(stack.down, home)
    return stack.up(home, checkpoints=[organism_dir("video")], progress=lambda line: None, **kwargs)


def listening_sockets(pids) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state that one of ``pids`` holds (read from /proc)."""
    inodes = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table, _width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address_hex, port_hex = local.split(":")
            raw = bytes.fromhex(address_hex)
            # /proc prints the address as 32-bit words in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(raw)
            found.append((inodes[inode], str(address), int(port_hex, 16)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback
