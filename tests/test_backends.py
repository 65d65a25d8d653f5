"""Backends as objects: both shipped backends satisfy the protocol, a backend written here (one class) carries a
whole `mf.run`, `choose_backend` refuses contradictions, and the NDIF backend says (and records) what it runs with
which plan, refusing what it cannot run, before anything is sent."""

import logging
import socket

import numpy as np
import pytest

import mapflow as mf
from mapflow.analysis.context import StudyConfig
from mapflow.analysis.runner import load_study
from mapflow.backends import Backend, LocalBackend, NDIFBackend, choose_backend
from mapflow.errors import KnockoutConfigError, MapflowError
from mapflow.remote import RemoteSettings, ServerUnreachable

SETTINGS = {"window": 3, "samples": "all"}


def unreachable_settings() -> RemoteSettings:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return RemoteSettings(host=f"http://127.0.0.1:{port}", model_key="org/some-model", server_timeout_s=2.0)


class CountingBackend:
    """A third backend in one class: counts what the run asks of it and runs it in this process."""

    name = "counting"

    def __init__(self):
        self.inner = LocalBackend()
        self.concurrency = 1
        self.calls = {"prepare": 0, "measure_sample": 0, "run_cells": 0}
        self.adapters = set()  # the adapter every call got: the one `prepare` handed out

    def prepare(self, study, adapter, config):
        self.calls["prepare"] += 1
        adapter, config = self.inner.prepare(study, adapter, config)
        self.prepared_adapter = adapter
        return adapter, config

    def measure_sample(self, function, adapter, prepared, *args):
        self.calls["measure_sample"] += 1
        self.adapters.add(id(adapter))
        return self.inner.measure_sample(function, adapter, prepared, *args)

    def run_cells(self, adapter, prepared, request):
        self.calls["run_cells"] += 1
        self.adapters.add(id(adapter))
        return self.inner.run_cells(adapter, prepared, request)

    def cancel(self):
        self.inner.cancel()

    def describe(self):
        return {"counting": dict(self.calls)}


class MissingCells:
    name, concurrency = "broken", 1

    def prepare(self, study, adapter, config): ...
    def measure_sample(self, function, adapter, prepared, *args): ...
    def cancel(self): ...
    def describe(self): ...


def test_both_shipped_backends_and_a_one_class_backend_satisfy_the_protocol():
    assert isinstance(LocalBackend(), Backend)
    assert isinstance(NDIFBackend(unreachable_settings()), Backend)
    assert isinstance(CountingBackend(), Backend)
    assert not isinstance(MissingCells(), Backend)  # the check can fail: no run_cells
    with pytest.raises(MapflowError, match="takes a mapflow.backends.Backend"):
        choose_backend(MissingCells())


@pytest.mark.parametrize("study", ["information_flow", "logit_lens"])  # cells (run_cells) / a sample request
def test_a_backend_of_ones_own_carries_every_measurement_of_mf_run_with_the_default_numbers(
    study, sdpa_adapter, tiny_benchmark
):
    data = mf.load_benchmark("tvbench", tiny_benchmark, limit=1)
    counting = CountingBackend()
    ours = mf.run(study, sdpa_adapter, data, backend=counting, progress=False, **SETTINGS)
    default = mf.run(study, sdpa_adapter, data, progress=False, **SETTINGS)
    samples = ours.sizes["sample"]
    assert samples >= 2 and list(ours.sample.values) == list(default.sample.values)
    kind = "run_cells" if study == "information_flow" else "measure_sample"
    assert counting.calls["prepare"] == 1 and counting.calls[kind] == samples, counting.calls
    assert counting.adapters == {id(counting.prepared_adapter)}
    assert ours.attrs["provenance"]["runtime"]["counting"][kind] == 0  # described when the run started
    assert "counting" not in default.attrs["provenance"]["runtime"]
    assert set(ours.data_vars) == set(default.data_vars)
    for name in default.data_vars:
        np.testing.assert_array_equal(ours[name].values, default[name].values, err_msg=name)


def test_the_chooser_refuses_contradictions_and_remote_settings_for_a_local_run():
    settings = unreachable_settings()
    with pytest.raises(MapflowError, match="both say where or how the run executes"):
        choose_backend(LocalBackend(), remote=True)
    with pytest.raises(MapflowError, match=r"concurrency= both"):
        choose_backend(NDIFBackend(settings), concurrency=4)
    with pytest.raises(MapflowError, match="concurrency applies to remote runs"):
        choose_backend(concurrency=2)
    with pytest.raises(MapflowError, match="remote batch .* applies to remote runs"):
        choose_backend(batch=2)
    assert isinstance(choose_backend(), LocalBackend) and isinstance(choose_backend(remote=False), LocalBackend)
    chosen = choose_backend(remote=settings, concurrency=3, batch=2)
    assert isinstance(chosen, NDIFBackend) and chosen.concurrency == 3 * 2  # samples in flight: requests x batch
    assert choose_backend(remote=settings).requests_in_flight == 2  # the CLI's --remote default too
    with pytest.raises(MapflowError, match="at least 1"):
        choose_backend(remote=settings, concurrency=0)


def test_mf_run_refuses_contradictions_before_the_model_loads(tmp_path):
    with pytest.raises(MapflowError, match="both say where"):
        mf.run("information_flow", tmp_path / "no-such-model", backend=LocalBackend(), remote=True)
    with pytest.raises(MapflowError, match="concurrency applies to remote runs"):
        mf.run("information_flow", tmp_path / "no-such-model", concurrency=2)


def test_the_ndif_backend_converts_the_plan_with_a_message_and_records_it(sdpa_adapter, monkeypatch, caplog):
    from mapflow.remote import client

    monkeypatch.setattr(client, "check_server", lambda settings: {})  # no server: everything else as a run does
    backend = NDIFBackend(unreachable_settings())
    with caplog.at_level(logging.WARNING, logger="mapflow.backends.ndif"):
        view, config = backend.prepare(load_study("cross_frame"), sdpa_adapter, StudyConfig(plan="auto"))
    assert config.plan == "naive" and "plan auto -> naive" in caplog.text
    assert backend.describe()["remote"]["trace_plan"] == "naive"
    assert backend.describe()["remote"]["cells_plan"] == "auto"  # the cells run the run's plan on the server
    assert view is not sdpa_adapter and view.backend is None and sdpa_adapter.model is not view.model
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mapflow.backends.ndif"):
        _, config = backend.prepare(load_study("cross_frame"), sdpa_adapter, StudyConfig(plan="naive"))
    assert config.plan == "naive" and "->" not in caplog.text  # nothing converted, nothing said
    trace = NDIFBackend(RemoteSettings(host="http://127.0.0.1:1", model_key="m", plan="trace"))
    trace.prepare(load_study("cross_frame"), sdpa_adapter, StudyConfig(plan="auto"))
    assert trace.describe()["remote"]["cells_plan"] == "naive"  # per-trace requests: the cells are traces too


def test_the_ndif_backend_refuses_the_screen_before_anything_is_sent(sdpa_adapter):
    backend = NDIFBackend(unreachable_settings())  # a server would be unreachable: the plan is refused first
    with pytest.raises(KnockoutConfigError, match="runs locally only"):
        backend.prepare(load_study("information_flow"), sdpa_adapter, StudyConfig(plan="screen"))


def test_a_model_loaded_for_ndif_remembers_its_backend_and_mf_run_uses_it(tiny_model_dir, tiny_benchmark):
    settings = unreachable_settings()
    model = mf.load_model(tiny_model_dir, remote=settings, concurrency=3)
    assert isinstance(model.backend, NDIFBackend) and model.backend.settings == settings
    assert model.backend.requests_in_flight == 3
    assert mf.load_model(tiny_model_dir).backend is None
    data = mf.load_benchmark("tvbench", tiny_benchmark, limit=1)
    with pytest.raises(ServerUnreachable, match=settings.host):  # its backend, checked before the first sample
        mf.run("information_flow", model, data, progress=False, **SETTINGS)
    with pytest.raises(MapflowError, match="its concurrency is that backend's"):
        mf.run("information_flow", model, data, concurrency=2, progress=False, **SETTINGS)
    ds = mf.run("information_flow", model, data, remote=False, progress=False, **SETTINGS)  # here, by request
    assert "remote" not in ds.attrs["provenance"]["runtime"]
