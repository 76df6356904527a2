import json
import math
from pathlib import Path

import pytest

from altmodal import suite
from altmodal.benchmark import Cell
from altmodal.cli import main
from altmodal.metrics import mean_std
from tests.conftest import TINY

TINY_RUN = {"epochs": 1, "hidden": (16,), "dim": 8, "batch_size": 32, "folds": 1}


@pytest.fixture(scope="module")
def ran(tmp_path_factory, monkeypatch_module):
    entries = (
        suite.Entry("tiny a", {"dataset": "synthetic", "dataset_options": TINY, **TINY_RUN}),
        suite.Entry(
            "tiny b (m1 weak)", {"dataset": "synthetic", "dataset_options": (*TINY, "strengths=1,0.1"), **TINY_RUN}
        ),
        suite.Entry("media", {"dataset": "avdigits"}, media="avdigits"),
    )
    monkeypatch_module.setitem(suite.SUITES, "tiny", suite.Suite(entries, (0,)))
    out = tmp_path_factory.mktemp("suite")
    args = ["benchmark", "--suite", "tiny", "--strategies", "joint,mla", "--out", str(out)]
    assert main([*args, "--media-root", str(out / "absent"), "--jobs", "1", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_each_dataset_gets_a_report_and_the_summary_counts_every_verdict(ran):
    summary = json.loads((ran / "suite.json").read_text())
    assert [d["name"] for d in summary["datasets"]] == ["tiny a", "tiny b (m1 weak)", "media"]
    assert "no raw avdigits folder" in summary["datasets"][2]["skipped"]
    for d in summary["datasets"][:2]:
        assert (ran / d["folder"] / "report.md").is_file()
        rows = d["strategies"]
        assert rows[d["best"]]["verdict"] == "win"
        assert mean_std(rows[d["best"]]["fused"])[0] == max(mean_std(r["fused"])[0] for r in rows.values())
        assert all(len(r["fused"]) == 1 for r in rows.values())
    verdicts = ("win", "tie", "loss")
    assert {s: sum(r[v] for v in verdicts) for s, r in summary["record"].items()} == {"joint": 2, "mla": 2}
    for s, r in summary["record"].items():  # 1 = best on every dataset, 2 = worst of two
        ranks = [d["strategies"][s]["rank"] for d in summary["datasets"][:2]]
        assert r["mean_rank"] == pytest.approx(sum(ranks) / 2) and all(1 <= x <= 2 for x in ranks)
    for d in summary["datasets"][:2]:  # the best modality trained alone, from the "alone" runs
        assert d["alone"]["modality"] in ("m0", "m1") and len(d["alone"]["fused"]) == 1
    text = (ran / "suite.md").read_text()
    assert "| strategy | wins | ties | losses | mean rank |" in text and "Skipped: no raw avdigits folder" in text
    assert "| best modality alone (" in text
    assert "| strategy | tiny a | tiny b (m1 weak) | mean rank | wins / ties / losses | s/epoch / joint |" in text
    assert text.count("| best modality alone | ") == 1
    assert any(line.startswith("| joint | ") and line.endswith("| 1.00 |") for line in text.splitlines())
    from altmodal.suite import cost_per_epoch

    mla = [d["strategies"]["mla"]["seconds_per_epoch"][0] / d["strategies"]["joint"]["seconds_per_epoch"][0]
           for d in summary["datasets"][:2]]  # fmt: skip
    assert cost_per_epoch(summary["datasets"][:2], "mla") == pytest.approx(math.sqrt(mla[0] * mla[1]))


def test_verdicts_follow_the_spread():
    fused = {"a": (0.9, 0.8), "b": (0.84, 0.84), "c": (0.7, 0.7), "a2": (0.8, 0.9)}
    results = {
        Cell("main", label, seed): {"metrics": {"test": {"fused": {"accuracy": value}, "unimodal": {}}}}
        for label, pair in fused.items()
        for seed, value in enumerate(pair)
    }
    rows = suite.summarize(results, list(fused), [])["strategies"]
    assert [rows[s]["verdict"] for s in fused] == ["win", "tie", "loss", "win"]
    assert rows["c"]["gap"] == pytest.approx(-0.15)


def test_a_suite_runs_the_datasets_named_in_their_order(ran, capsys):
    args = ["benchmark", "--suite", "tiny", "--strategies", "joint,mla", "--out", str(ran), "--jobs", "1", "--quiet"]
    assert main([*args, "--suite-datasets", "tiny-b,tiny-a"]) == 0  # its runs are done: nothing retrains
    summary = json.loads((ran / "suite.json").read_text())
    assert [d["name"] for d in summary["datasets"]] == ["tiny b (m1 weak)", "tiny a"]
    assert main([*args, "--suite-datasets", "tiny-c"]) == 2
    assert "suite 'tiny' has no dataset 'tiny-c'; its datasets: tiny-a, tiny-b, media" in capsys.readouterr().err
    assert main([*args, "--suite-datasets", " , "]) == 2  # not all of them
    assert "--suite-datasets names no dataset; give one or more, comma-separated" in capsys.readouterr().err


def test_the_data_folder_is_the_flag_else_the_environment_variable():
    env = {suite.DATA_ENV: "/from/env"}
    assert suite.data_folder("/from/flag", env) == suite.DataFolder(Path("/from/flag"), "--media-root")
    assert suite.data_folder(None, env) == suite.DataFolder(Path("/from/env"), "ALTMODAL_DATA")
    assert suite.data_folder(None, {suite.DATA_ENV: ""}).path is None and suite.data_folder(None, {}).path is None


def test_a_missing_feature_file_stops_the_suite_naming_it_and_the_setting(tmp_path, monkeypatch, capsys):
    (tmp_path / "env" / "multiview").mkdir(parents=True)
    (tmp_path / "env" / "multiview" / "cora.npz").write_bytes(b"")
    suite.check_files([suite.Entry("cora", {}, file="multiview/cora.npz")], suite.data_folder(str(tmp_path / "env")))
    args = ["benchmark", "--suite", "real", "--suite-datasets", "cora,acm", "--out", str(tmp_path / "out"), "--quiet"]
    monkeypatch.setenv(suite.DATA_ENV, str(tmp_path / "env"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    env = tmp_path / "env"
    assert f"{env / 'multiview' / 'acm.npz'}: not found (the data folder {env}, from ALTMODAL_DATA)" in err
    assert f"`altmodal prepare multiview --root MAT_FOLDER --out {tmp_path / 'env'}`" in err
    assert main([*args, "--media-root", str(tmp_path / "flag")]) == 2  # the flag wins
    err = capsys.readouterr().err
    assert f"{tmp_path / 'flag' / 'multiview' / 'cora.npz'} and 1 more: not found" in err and "from --media-root" in err
    monkeypatch.delenv(suite.DATA_ENV)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the suite reads multiview/cora.npz and 1 more from a data folder: set ALTMODAL_DATA=DIR or pass" in err
    assert not (tmp_path / "out").exists()  # stopped before anything ran
