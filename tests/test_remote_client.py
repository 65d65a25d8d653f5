"""Remote execution without a server: settings resolution, the pre-flight study check, an unreachable host."""

import socket
import textwrap
import time

import pytest

from mapflow.analysis.runner import load_study
from mapflow.errors import MapflowError
from mapflow.remote import NotRemotable, ServerUnreachable, model_key_for, resolve_settings
from mapflow.remote.preflight import check_study_remotable
from mapflow.remote.settings import resolve_model_key


@pytest.fixture(autouse=True)
def no_ambient_settings(monkeypatch, tmp_path):
    for name in (
        "MAPFLOW_NDIF_HOST",
        "MAPFLOW_NDIF_API_KEY",
        "MAPFLOW_NDIF_MODEL",
        "MAPFLOW_NDIF_TIMEOUT",
        "MAPFLOW_REMOTE_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.config/mapflow/remote.toml
    monkeypatch.setenv("MAPFLOW_NDIF_HOME", str(tmp_path / "no-stack"))


def test_flag_beats_environment_beats_config_file(monkeypatch, tmp_path):
    config = tmp_path / "remote.toml"
    config.write_text('host = "http://file:1"\napi_key = "from-file"\ntimeout_s = 7\n')
    assert resolve_settings(config_file=config, model="m").host == "http://file:1"
    monkeypatch.setenv("MAPFLOW_NDIF_HOST", "http://env:2")
    settings = resolve_settings(config_file=config, model="m")
    assert (settings.host, settings.api_key, settings.timeout_s) == ("http://env:2", "from-file", 7.0)
    assert resolve_settings(host="http://flag:3/", config_file=config, model="m").host == "http://flag:3"


def test_no_host_anywhere_is_a_clear_error():
    with pytest.raises(MapflowError, match="no NDIF host"):
        resolve_settings(model="m")


def test_a_checkpoint_path_becomes_the_key_ndif_deploy_uses(tmp_path):
    key = resolve_model_key(str(tmp_path))
    assert key == model_key_for(str(tmp_path.resolve()))
    assert key.startswith('nnsight.modeling.transformers.TransformersModel:{"repo_id": ')
    assert resolve_model_key(key) == key  # a full key is taken as is
    assert '"repo_id": "org/name"' in resolve_model_key("org/name")


def test_the_key_matches_what_nnsight_mints():
    """The server finds a deployment by the exact key string, so ours must be nnsight's own for the checkpoint."""
    from nnsight.modeling.huggingface import _ID_CACHE
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoTokenizer

    from mapflow.embedded import organism_dir

    path = str(organism_dir("video").resolve())
    _ID_CACHE.setdefault(path, path)  # a local path has no hub id to canonicalise
    model = TransformersModel(path, task="image-text-to-text", processor=AutoTokenizer.from_pretrained(path))
    assert model.to_model_key() == model_key_for(path)


def write_study(tmp_path, body):
    path = tmp_path / "study_under_test.py"
    path.write_text(textwrap.dedent(body))
    return load_study(str(path))


def test_shipped_studies_pass_the_preflight_check():
    for name in ("cross_frame", "information_flow", "cross_frame_halves", "accuracy"):
        check_study_remotable(load_study(name))


def test_saving_into_a_dict_is_refused_before_anything_is_sent(tmp_path):
    study = write_study(
        tmp_path,
        """
        def run(ctx):
            out = {}
            with ctx.trace():
                out["h"] = ctx.adapter.layers[0].output.save()
            return out
    """,
    )
    with pytest.raises(NotRemotable, match=r"study_under_test.py:5: a saved value is stored in a dict entry"):
        check_study_remotable(study)


def test_code_built_with_exec_is_refused(tmp_path):
    study = write_study(
        tmp_path,
        """
        def run(ctx):
            exec("x = 1")
    """,
    )
    with pytest.raises(NotRemotable, match="exec"):
        check_study_remotable(study)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_fails_fast_naming_host_and_model(sdpa_adapter, tiny_benchmark, tmp_path):
    from mapflow.analysis.context import StudyConfig
    from mapflow.analysis.runner import run_study
    from mapflow.data.benchmarks import get_benchmark

    host = f"http://127.0.0.1:{free_port()}"
    settings = resolve_settings(host=host, model="org/some-model")
    samples = get_benchmark("tvbench").loader(tiny_benchmark, tasks=None, limit=1, seed=0)
    start = time.monotonic()
    with pytest.raises(ServerUnreachable) as caught:
        run_study(
            load_study("cross_frame"),
            sdpa_adapter,
            samples,
            tmp_path / "out.zarr",
            config=StudyConfig(),
            provenance={"study": "cross_frame", "model": {"name": "m"}, "config": {}},
            remote=settings,
            progress=False,
        )
    assert time.monotonic() - start < 15
    assert host in str(caught.value) and "org/some-model" in str(caught.value)
    assert not (tmp_path / "out.zarr").exists()  # nothing was created for a run that could not start


def test_remote_plan_and_concurrency_options_are_checked(monkeypatch):
    import argparse

    from mapflow.backends import LocalBackend, NDIFBackend
    from mapflow.backends.ndif import DEFAULT_CONCURRENCY
    from mapflow.cli.remote_options import add_remote_arguments, backend_from_args

    parser = argparse.ArgumentParser()
    add_remote_arguments(parser)
    remote = ["--remote", "--ndif-host", "http://h:1", "--remote-model", "/m"]

    def backend(*argv):
        return backend_from_args(parser.parse_args(list(argv)), "/m")

    assert isinstance(backend(*remote), NDIFBackend)
    assert backend(*remote).requests_in_flight == DEFAULT_CONCURRENCY
    assert isinstance(backend(), LocalBackend) and backend().concurrency == 1
    assert backend(*remote, "--concurrency", "4").requests_in_flight == 4
    assert backend(*remote, "--concurrency", "3", "--remote-batch", "2").concurrency == 6  # samples in flight
    with pytest.raises(MapflowError, match="concurrency applies to remote runs"):
        backend("--concurrency", "2")
    with pytest.raises(MapflowError, match="at least 1"):
        backend(*remote, "--concurrency", "0")
    assert resolve_settings(host="http://h:1", model="/m").plan == "sample"
    monkeypatch.setenv("MAPFLOW_NDIF_PLAN", "trace")
    assert resolve_settings(host="http://h:1", model="/m").plan == "trace"
    with pytest.raises(MapflowError, match="remote plan must be one of"):
        resolve_settings(host="http://h:1", model="/m", plan="batch")


def test_a_study_context_ships_by_value_to_a_server():
    """A traced block that reads ``ctx`` ships `StudyContext` with the functions its methods use, by value (mapflow
    is not installed on the server): all of it must pickle (a module-level weak dictionary once did not)."""
    import cloudpickle
    import nnsight

    from mapflow.analysis.context import StudyContext

    nnsight.register("mapflow")  # as `RemoteModel` does before its first request
    assert cloudpickle.loads(cloudpickle.dumps(StudyContext)).__name__ == "StudyContext"
