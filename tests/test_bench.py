"""`mapflow bench` on the tiny model: both phases agree, the work is counted, the naive phase can be skipped."""

from mapflow.cli.bench import format_report
from mapflow.knockout.flows import Window
from mapflow.knockout.sweep_bench import benchmark


def test_bench_reports_agreeing_phases_and_their_work(sdpa_adapter, tiny_benchmark):
    report = benchmark(sdpa_adapter, tiny_benchmark, limit=1, window=Window("center", 3), num_frames=4)
    naive, fast = report["naive"], report["optimized"]
    assert report["max_abs_diff_p_knockout"] <= 1e-5
    assert fast.forwards < naive.forwards and fast.token_layers < naive.token_layers
    assert naive.forwards == report["samples"] * (report["configs_per_sample"] + 1)
    text = format_report(report, "tiny")
    assert "max |delta p_knockout|" in text and "wall-clock s" in text


def test_bench_can_run_the_optimized_phase_alone_on_a_longer_clip(sdpa_adapter, tiny_benchmark):
    report = benchmark(sdpa_adapter, tiny_benchmark, limit=1, window=Window("center", 3), num_frames=12, naive=False)
    assert report["naive"] is None and report["optimized"].forwards >= 1
    assert "(naive phase skipped)" in format_report(report, "tiny")


def test_bench_times_the_screen_against_the_optimized_sweep(sdpa_adapter, tiny_benchmark):
    import numpy as np

    report = benchmark(
        sdpa_adapter, tiny_benchmark, limit=1, window=Window("center", 3), num_frames=4, naive=False, screen=True
    )
    screen, fast = report["screen"], report["optimized"]
    assert len(screen.p_knockout) == len(fast.p_knockout) == report["samples"]
    assert all(a.shape == b.shape for a, b in zip(screen.p_knockout, fast.p_knockout))
    assert all(np.all((a >= 0) & (a <= 1)) for a in screen.p_knockout)
    assert -1 <= report["screen_spearman"] <= 1 and report["screen_wall_ratio"] > 0
    assert "screen (first-order estimate, not exact)" in format_report(report, "tiny")


def test_bench_command_runs_a_layout_shape_under_a_device_map_and_writes_json(tmp_path, capsys, monkeypatch):
    """`--device-map auto` on a CPU-only machine: accelerate places everything on the CPU and the sweep runs."""
    import json

    from mapflow.cli import main
    from mapflow.knockout.planner import MEMORY_BUDGET_ENV

    monkeypatch.setenv(MEMORY_BUDGET_ENV, "")  # restored after the command sets it
    assert main(["bench", "--memory-budget", "lots"]) == 2
    assert "--memory-budget: cannot read a memory size from 'lots'" in capsys.readouterr().err
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--shape",
                "llava-8x144",
                "--layers",
                "2",
                "--frames",
                "2",
                "--device-map",
                "auto",
                "--memory-budget",
                "2GiB",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["layers"] == 2 and report["frames"] == 2 and report["dtype"] == "float32"
    assert report["max_abs_diff_p_knockout"] <= 1e-5 and report["optimized"]["forwards"] >= 1
    assert "2 layers" in capsys.readouterr().out
