"""Design-space sweeps: points, rows, failures, restart, parallel and Dask runs, Pareto plot."""
import json
from pathlib import Path

import pandas as pd
import pytest

import ipusim_cli
from simulator.sweep import (SweepError, SweepSpec, evaluate_point, load_sweep, parts_dir, point_id,
                             read_results, run_sweep)
from viz.pareto import pareto_mask, prepare

ROOT = Path(__file__).resolve().parents[1]
# mnist-mlp compiles in well under a second; tiles = 0 is an impossible chip (ChipError)
SPEC = {"model": "mnist-mlp", "tiles": [0, 368, 736], "batch": [1, 4], "dtype": "fp16"}


def _numeric(df):
    keep = [c for c in df.columns if c != "wall_s" and not c.startswith("timing.")
            and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    return df.set_index("point_id")[keep].sort_index().astype(float)


def test_points_are_the_cross_product_with_stable_ids():
    spec = SweepSpec.from_dict(SPEC)
    pts = spec.points()
    assert len(pts) == len(spec) == 6
    assert {(p["tiles"], p["batch"]) for p in pts} == {(t, b) for t in (0, 368, 736) for b in (1, 4)}
    assert all(p["model"] == "mnist-mlp" and p["dtype"] == "fp16" for p in pts)
    ids = [point_id(p) for p in pts]
    assert len(set(ids)) == 6
    assert ids == [point_id(dict(reversed(list(p.items())))) for p in pts]   # key order does not matter
    assert point_id(pts[0], simulate=False) != ids[0]
    with pytest.raises(SweepError, match="model"):
        SweepSpec.from_dict({"tiles": [1, 2]})


def test_example_sweep_file_is_100_resnet50_points():
    spec = load_sweep(ROOT / "examples" / "sweep_resnet50.toml")
    pts = spec.points()
    assert len(pts) == 100
    assert {p["model"] for p in pts} == {"resnet50"} and not any(p["train"] for p in pts)
    assert len({p["tiles"] for p in pts}) == 10 and len({p["sram_bytes_per_tile"] for p in pts}) == 10


def test_a_point_row_has_the_flattened_report_and_failures_are_data():
    row = evaluate_point({"model": "mnist-mlp", "tiles": 368, "sram_bytes_per_tile": 65536, "batch": 2})
    assert row["error"] is None and row["wall_s"] > 0
    assert row["tiles"] == 368 and row["chip.tiles"] == 368 and row["model.name"] == "mnist-mlp"
    for col in ("graph.vertices", "memory.fits", "memory.peak_tile_bytes", "sim.samples_per_second", "sim.seconds"):
        assert col in row
    assert isinstance(json.loads(row["memory.worst_tiles"]), list)
    bad = evaluate_point({"model": "mnist-mlp", "tiles": 0})
    assert bad["error"].startswith("ChipError") and "tiles" in bad["error"]
    unknown = evaluate_point({"model": "mnist-mlp", "no_such_option": 3})
    assert unknown["error"].startswith("SweepError") and "no_such_option" in unknown["error"]
    missing = evaluate_point({"model": "no-such-model"})
    assert "no-such-model" in missing["error"]


def test_sweep_records_failures_and_a_restart_runs_only_missing_points(tmp_path):
    out = tmp_path / "r.parquet"
    first = run_sweep(SPEC, out, workers=1)
    df = read_results(out)
    assert len(df) == 6 and len(first.ran) == 6 and not first.skipped
    assert (df["error"].notna() == (df["tiles"] == 0)).all()          # the failed points did not stop it
    assert df.loc[df["tiles"] > 0, "sim.samples_per_second"].gt(0).all()
    assert str(df["graph.vertices"].dtype) == "Int64"                 # integers stay integers beside NaN
    # lose two results (as if interrupted), run again: only those two run
    parts = sorted(parts_dir(out).glob("*.json"))
    assert len(parts) == 6
    lost = {parts[0].stem, parts[3].stem}
    for p in (parts[0], parts[3]):
        p.unlink()
    again = run_sweep(SPEC, out, workers=1)
    assert set(again.ran) == lost and len(again.skipped) == 4
    pd.testing.assert_frame_equal(_numeric(read_results(out)), _numeric(df))
    # nothing missing: nothing runs
    assert run_sweep(SPEC, out, workers=1).ran == []


def test_local_processes_and_a_dask_cluster_give_the_same_results(tmp_path):
    distributed = pytest.importorskip("distributed")
    local = run_sweep(SPEC, tmp_path / "local.parquet", workers=2).frame
    # worker threads in this process (processes=True works the same, but starts slower)
    with distributed.LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        res = run_sweep(SPEC, tmp_path / "dask.parquet", dask=cluster.scheduler_address)
    remote = read_results(tmp_path / "dask.parquet")
    assert len(res.ran) == 6 and len(remote) == 6
    assert list(remote["point_id"]) == list(local["point_id"])        # same rows, in sweep order
    a, b = _numeric(local), _numeric(remote)
    assert list(a.columns) == list(b.columns) and len(a.columns) > 20
    pd.testing.assert_frame_equal(a, b)
    assert (local["error"].isna() == remote["error"].isna()).all()


def test_pareto_front_marks_the_non_dominated_fitting_points():
    df = pd.DataFrame({"sim.samples_per_second": [10.0, 20.0, 30.0, 5.0, 40.0],
                       "memory.peak_tile_bytes": [100, 100, 200, 300, 50],
                       "memory.fits": [True, True, True, True, False],
                       "chip.tiles": [100, 100, 100, 100, 100], "chip.sram_bytes_per_tile": [1000] * 5,
                       "error": [None] * 5, "point_id": list("abcde")})
    d = prepare(df)
    # a is dominated by b; d by everyone; e is better than all but does not fit
    assert d["on_front"].tolist() == [False, True, True, False, False]
    m = pareto_mask(df, maximize=["sim.samples_per_second"], minimize=["memory.peak_tile_bytes"])
    assert m.tolist() == [False, False, False, False, True]        # without the fit condition e wins
    m = pareto_mask(df.iloc[:4], maximize=["sim.samples_per_second"], minimize=["memory.peak_tile_bytes"])
    assert m.tolist() == [False, True, True, False]


def test_cli_sweep_then_plot(tmp_path, capsys):
    toml = tmp_path / "s.toml"
    toml.write_text('model = "mnist-mlp"\ntiles = [0, 368, 736]\nsram_bytes_per_tile = [4096, 638976]\n')
    out, html = tmp_path / "res.parquet", tmp_path / "out" / "pareto.html"
    assert ipusim_cli.main(["sweep", str(toml), "--out", str(out), "--workers", "1"]) == 0
    assert "6 points" in capsys.readouterr().out
    assert ipusim_cli.main(["plot", str(out), "--html", str(html)]) == 0
    text = html.read_text()
    assert "Pareto front" in text and "plotly" in text.lower() and "sram_bytes_per_tile" in text
    assert ipusim_cli.main(["sweep", str(tmp_path / "missing.toml"), "--out", str(out)]) == 2


def test_an_axis_mixing_kinds_is_refused_before_any_point_runs(tmp_path):
    # model = ["mnist-mlp", 5] ran every point, then no results table could be written
    with pytest.raises(SweepError, match=r"key 'model' mixes number and text values"):
        SweepSpec.from_dict({"model": ["mnist-mlp", 5], "batch": [1]}, source="s.toml")
    assert len(SweepSpec.from_dict({"model": "mnist-mlp", "available_memory_proportion": [0.5, 1]})) == 2


def test_a_sweep_folder_or_an_output_folder_is_refused(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text('model = "mnist-mlp"\nbatch = [1, 2]\n')
    with pytest.raises(SweepError, match="is a folder"):
        load_sweep(tmp_path)
    # --out a folder wrote '<folder>.parts' and '.<name>.tmp' beside it after running every point
    assert ipusim_cli.main(["sweep", str(f), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is a folder" in err
    assert not (tmp_path.parent / (tmp_path.name + ".parts")).exists()


def test_an_unreachable_dask_scheduler_is_one_error_naming_it(tmp_path, monkeypatch):
    import simulator.sweep as sw
    monkeypatch.setattr(sw, "DASK_CONNECT_TIMEOUT_S", 1)
    spec = SweepSpec.from_dict({"model": "mnist-mlp", "batch": [1]})
    with pytest.raises(SweepError, match=r"--dask 'tcp://127.0.0.1:1': cannot reach the scheduler"):
        sw.run_sweep(spec, tmp_path / "r.parquet", dask="tcp://127.0.0.1:1")


def test_a_sweep_of_more_points_than_it_can_hold_is_refused_with_its_count():
    # 10^8 points died with MemoryError building the list
    axes = {f"p{i}": list(range(100)) for i in range(4)}
    with pytest.raises(SweepError, match=r"100,000,000 points .* at most 1,000,000"):
        SweepSpec.from_dict({"model": "mnist-mlp", **axes}, source="big.toml")
