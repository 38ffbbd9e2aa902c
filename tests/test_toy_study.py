"""A tiny setting of each subcommand of examples/toy_study.py runs end to end."""

import importlib.util
import itertools
import json
import os
import sys

import pytest

_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "examples",
    "toy_study.py",
)


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("toy_study", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # `--workers` pickles the module's functions for spawned processes.
    sys.modules["toy_study"] = module
    sys.path.insert(0, os.path.dirname(_PATH))
    yield module
    sys.path.remove(os.path.dirname(_PATH))
    del sys.modules["toy_study"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    # One folder for the whole module: later subcommands reuse cached runs,
    # as they do in a real study.
    return str(tmp_path_factory.mktemp("toy_study"))


# T = 3, M = 6, 2 epochs, one seed: every code path, a few seconds a run.
TINY = ["--tasks", "3", "--orders", "6", "--epochs", "2", "--seeds", "1"]


def _outputs(out, name):
    for ext in ("json", "md", "png"):
        assert os.path.getsize(os.path.join(out, f"{name}.{ext}")) > 0
    with open(os.path.join(out, f"{name}.json")) as f:
        return json.load(f)


def test_orders_by_distance(study):
    chosen = study.orders_by_distance(4, per_distance=None)
    assert len(chosen) == 24
    distances = {d for d, _ in chosen}
    assert distances == {0, 4, 6, 8}  # 2 (T - fixed points); never 2
    assert [o for d, o in chosen if d == 0] == [[0, 1, 2, 3]]
    assert len(study.orders_by_distance(5, per_distance=1)) == 5


def test_table1(study, out, capsys):
    payload = study.main(
        ["table1", *TINY, "--out", out, "--warmup-grid", "0",
         "--dropout-grid", "3,6"]
    )
    # k < M only; n = 0 is the plain run, so only 3 runs train here.
    assert payload["search"]["dropout"][0]["spec"]["k"] == 3
    rows = payload["rows"]
    assert list(rows) == [
        "hard selection", "plain", "warm-up", "dropout", "warm-up + dropout"
    ]
    assert rows["warm-up"]["spec"] == rows["plain"]["spec"]
    assert rows["warm-up + dropout"]["spec"] == dict(head="monet", orders=6, k=3)
    for row in rows.values():
        assert 0 <= row["mean"] <= 100
        assert len(row["per_task"]) == 3
    hard = rows["hard selection"]["results"][0]
    assert hard["top_order"] in [list(p) for p in itertools.permutations(range(3))]
    assert len(rows["plain"]["results"][0]["distance_history"]) == 2
    assert _outputs(out, "table1")["orders"] == 6
    assert "warm-up + dropout" in capsys.readouterr().out


def test_table2_reuses_table1_choice(study, out, capsys):
    payload = study.main(["table2", *TINY, "--out", out])
    assert payload["rows"]["MONET"]["spec"] == dict(
        head="monet", orders=6, n=0, k=3
    )
    assert "cached" in capsys.readouterr().out  # Table 1's MONET run
    assert set(payload["rows"]) == {"VMNC", "VMNS", "MRNN", "MONET", "oracle"}
    _outputs(out, "table2")


def test_fig6_and_fig5(study, out, capsys):
    payload = study.main(["fig6", *TINY, "--dropout-grid", "3", "--out", out])
    assert set(payload["curves"]) == {"6", "3"}
    assert capsys.readouterr().out.count("cached") == 2  # Table 1's runs
    _outputs(out, "fig6")
    payload = study.main(["run", *TINY, "--out", out])  # plain: cached
    assert payload["spec"] == dict(head="monet", orders=6)
    _outputs(out, "run_orders6_e2")
    payload = study.main(
        ["fig5", "--tasks", "2", "--epochs", "1", "--seeds", "1", "--out", out]
    )
    assert [list(row[:3]) for row in payload["rows"]] == [
        [2, 0, [0, 1]], [2, 4, [1, 0]]
    ]
    _outputs(out, "fig5")


def test_workers_train_the_same_runs_in_parallel(study, out, tmp_path):
    # fig5 at T = 2 (two orders) ran one at a time in `out` above.
    flags = ["fig5", "--tasks", "2", "--epochs", "1", "--seeds", "1"]
    parallel = study.main(flags + ["--workers", "2", "--out", str(tmp_path)])
    assert len(os.listdir(tmp_path / "runs")) == 2
    sequential = study.main(flags + ["--out", out])  # cached
    for a, b in zip(parallel["runs"], sequential["runs"]):
        assert a["spec"] == b["spec"]
        assert a["test_accuracy"] == b["test_accuracy"]
        assert a["loss_history"] == b["loss_history"]


def test_bad_flags(study):
    with pytest.raises(ValueError, match="`--epochs` should be >= 1"):
        study.parse_args(["table1", "--epochs", "0"])
    with pytest.raises(ValueError, match="`--workers` should be >= 1"):
        study.parse_args(["table1", "--workers", "0"])
    with pytest.raises(ValueError, match="`--tasks` should all be >= 2"):
        study.parse_args(["fig5", "--tasks", "1,3"])
