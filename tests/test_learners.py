"""Classical learners: inside a cross-fitted run (candidates of its fusion, saved without pickle)
and as the benchmark's reference rows."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from altmodal import load_run
from altmodal.benchmark import BenchmarkConfig, cells, run_grid
from altmodal.experiment import evaluate_run, train_run
from altmodal.learners import Learners, dumps, learner_names, loads, log_proba, pack
from altmodal.reference import reference_kind, run_reference
from tests.conftest import TINY, tiny_config


def test_learners_are_linear_per_modality_and_boosted_on_the_joined_features():
    assert learner_names(["a", "b"], ["linear", "boosted"]) == ["a:linear", "b:linear", "*:linear", "*:boosted"]
    assert learner_names(["a"], ["linear", "boosted"]) == ["a:linear", "a:boosted"]  # one modality: no join
    assert learner_names(["a", "b"], ["linear", "svm"])[-1] == "*:svm"


def test_the_svm_learner_chooses_its_strength_on_the_held_rows_and_answers_calibrated_probabilities():
    from altmodal.learners import CS, Kernel, _loaded, _saved, fit

    rng = np.random.default_rng(0)
    label = np.repeat([0, 1, 2], 50)
    x = rng.normal(size=(150, 5)).astype(np.float32)
    x[:, 0] += 2 * label
    held = np.zeros(150, dtype=bool)
    held[::4] = True
    model = fit("svm", x, label, seed=0, held=held)
    assert isinstance(model, Kernel) and model.svm.C in CS
    assert len(model.svm.support_) and model.svm.support_.max() < (~held).sum()  # fitted on the rest
    out = log_proba(model, x, 3)
    assert np.allclose(np.exp(out).sum(1), 1, atol=1e-4) and (out.argmax(1) == label).mean() > 0.8
    again = _loaded(_saved(model), "*:svm")  # skops: the SVM and its calibration, no pickle
    assert np.array_equal(log_proba(again, x, 3), out)
    two = fit("svm", x[label < 2], label[label < 2], seed=0, held=held[label < 2])  # two classes: one score
    assert np.allclose(np.exp(log_proba(two, x, 2)).sum(1), 1, atol=1e-4)
    with pytest.raises(ValueError, match="saved: not an SVM and its calibration"):
        Kernel.from_parts({"svm": model.svm}, "saved")
    with pytest.raises(ValueError, match="tunes on held rows"):
        Kernel(np.zeros(150, dtype=bool)).fit(x, label)  # nothing held: no strength to choose


def test_the_svm_learner_is_left_out_where_its_kernel_costs_too_much(monkeypatch, caplog):
    from altmodal import learners
    from altmodal.data.registry import load, load_splits
    from altmodal.experiment import run_learners

    assert learners.affordable("svm", 1000, 1000) and not learners.affordable("svm", 10_000, 1000)
    assert learners.affordable("linear", 10**6, 10**6)
    config = tiny_config(folds=2)
    splits = load_splits(config.data, 0, load(config.data))
    assert run_learners(config, splits, {}).names[-1] == "*:svm"
    monkeypatch.setattr(learners, "KERNEL_BUDGET", 1.0)
    with caplog.at_level("INFO"):
        assert "*:svm" not in run_learners(config, splits, {}).names
    assert "svm left out" in caplog.text and "rows x" in caplog.text


def test_a_linear_learner_on_sparse_counts_fits_the_same_function_through_a_shifted_sparse_matrix(monkeypatch):
    from sklearn.linear_model import LogisticRegression

    from altmodal import learners

    rng = np.random.default_rng(0)
    counts = rng.poisson(0.05, size=(300, 40)).astype(np.float64)
    label = (counts[:, :3].sum(axis=1) > 0).astype(np.int64) + (counts[:, 3] > 0)
    x = (counts - counts.mean(axis=0)) / counts.std(axis=0)  # standardised: dense
    assert learners.sparse_shift(x) is None  # 12,000 cells: a dense fit costs nothing
    monkeypatch.setattr(learners, "SPARSE_CELLS", 1000)
    shift = learners.sparse_shift(x)
    assert shift is not None and np.array_equal(shift, np.median(x, axis=0))
    assert learners.sparse_shift(rng.normal(size=(300, 40))) is None  # dense: no gain

    def tight() -> LogisticRegression:
        return LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000)

    dense = learners.fit("linear", x, label, 0, tight())
    sparse = learners.fit("linear", x, label, 0, tight(), sparse=True)
    assert np.abs(sparse.coef_ - dense.coef_).max() < 1e-5
    assert np.abs(sparse.predict_proba(x) - dense.predict_proba(x)).max() < 1e-6  # asked on the dense rows


def test_every_kind_of_learner_weighs_its_rows_a_class_weighed_zero_is_not_answered():
    from altmodal import learners

    rng = np.random.default_rng(0)
    label = np.arange(150) % 3
    x = rng.normal(size=(150, 4)) + 2.0 * label[:, None]
    held = np.arange(150) % 5 == 0
    weight = np.where(label == 2, 0.0, 1.0)
    for kind in ("linear", "boosted", "svm"):
        plain = learners.fit(kind, x, label, 0, held=held).predict_proba(x).argmax(1)
        weighed = learners.fit(kind, x, label, 0, held=held, weight=weight).predict_proba(x).argmax(1)
        assert (plain == 2).mean() > 0.25 and not (weighed == 2).any(), kind


def test_boosted_trees_route_missing_values_natively_and_reload_from_their_text_to_the_same_answers():
    from altmodal.learners import Trees, fit

    rng = np.random.default_rng(0)
    label = np.repeat([0, 1, 2], 40)
    x = rng.normal(size=(120, 1500)).astype(np.float32)
    x[:, 7] += 3 * label  # the one informative column
    model = fit("boosted", x, label, seed=0)
    holes = x.copy()
    holes[:10] = np.nan  # a whole absent modality: native missing values
    out = log_proba(model, holes, num_classes=3)
    assert out.shape == (120, 3) and np.isfinite(out).all()
    assert (out[10:].argmax(1) == label[10:]).mean() > 0.9
    again = Trees.from_text(model.text(), "saved")
    assert np.array_equal(log_proba(again, holes, 3), out)
    assert b"__reduce__" not in model.text() and model.text().startswith(b'{"classes": [0, 1, 2]')
    with pytest.raises(ValueError, match="saved: the saved trees cannot be read"):
        Trees.from_text(b'{"classes": [0, 1, 2], "trees": "not a model"}', "saved")
    with pytest.raises(ValueError, match="do not answer for their 2 classes"):
        Trees.from_text(model.text().replace(b'"classes": [0, 1, 2]', b'"classes": [0, 1]'), "saved")


def test_the_boosted_reference_row_sees_the_most_informative_columns_of_wide_inputs():
    from altmodal.reference import WIDEST_BOOSTED, _fit_on

    rng = np.random.default_rng(0)
    label = np.repeat([0, 1, 2], 40)
    x = rng.normal(size=(120, WIDEST_BOOSTED + 500)).astype(np.float32)
    x[:, 7] += 3 * label
    x[:, 11] = 0.0  # a constant column
    present = {"a": np.ones(120, dtype=bool)}
    model = _fit_on("boosted", ["a"], {"a": x}, present, label, seed=0)
    assert len(model.columns_) == WIDEST_BOOSTED and 7 in model.columns_ and 11 not in model.columns_
    assert (log_proba(model, x, 3).argmax(1) == label).mean() > 0.9


def test_log_proba_covers_every_class_even_one_the_learner_never_saw():
    from altmodal.learners import fit

    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    label = np.repeat([0, 2], 30)  # class 1 absent from these rows
    out = log_proba(fit("linear", x, label, seed=0), x, num_classes=3)
    assert out.shape == (60, 3) and np.all(out[:, 1] < -10)
    assert np.allclose(np.exp(out[:, [0, 2]]).sum(1), 1, atol=1e-4)


@pytest.fixture(scope="module")
def with_learners(tmp_path_factory):
    out = tmp_path_factory.mktemp("learners") / "run"
    return out, train_run(tiny_config(folds=3, epochs=2), out)  # the default learners


def test_a_cross_fitted_run_weighs_its_learners_out_of_fold_and_reloads_them(with_learners):
    out, metrics = with_learners
    card = json.loads((out / "model.json").read_text())
    assert card["learners"] == ["m0:linear", "m1:linear", "*:linear", "*:boosted", "*:svm"]
    scores = metrics["strategy_summary"]["fusion_scores"]
    assert {"alone:m0:linear", "alone:*:boosted", "alone:*:svm", "stacked", "weighted"} <= set(scores)
    saved = load_file(out / "model.safetensors")
    assert saved["learners._extra_state"].dtype == torch.uint8  # skops and LightGBM's text: no pickle
    assert evaluate_run(out)["test"]["fused"]["accuracy"] == pytest.approx(metrics["test"]["fused"]["accuracy"])
    model = load_run(out)
    assert len(model.strategy.learners.fitted) == 3  # one set per member


def test_learners_fitted_in_a_side_process_are_those_fitted_in_the_run(with_learners, tmp_path):
    from altmodal.threads import side_process, torch_threads

    with torch_threads(2):  # two threads under auto: the networks keep one, the learners fit in a second process
        assert side_process() is not None
        out = tmp_path / "side"
        metrics = train_run(tiny_config(folds=3, epochs=2), out, threads="auto")
    with torch_threads(1):
        assert side_process() is None
    here = with_learners[1]  # trained without a thread setting: the learners fit in this process
    assert metrics["learner_seconds"] > 0
    assert metrics["strategy_summary"]["fusion_scores"] == here["strategy_summary"]["fusion_scores"]
    assert metrics["test"] == here["test"]
    x = {m: torch.randn(7, 8) for m in ("m0", "m1")}
    present = {m: torch.ones(7, dtype=torch.bool) for m in x}
    side, own = (load_run(p).strategy.learners.log_probs(x, present) for p in (out, with_learners[0]))
    assert all(torch.equal(side[n], own[n]) for n in own)
    learners = load_run(out).strategy.learners  # the bytes made beside the fits are those saved again
    state = learners.get_extra_state()
    assert learners.saved and torch.equal(state, load_file(out / "model.safetensors")["learners._extra_state"])


def test_a_planted_payload_in_the_saved_learners_is_refused_and_runs_nothing(with_learners, tmp_path):
    import shutil

    out, _ = with_learners
    planted = tmp_path / "planted"
    shutil.copytree(out, planted)
    names = json.loads((out / "model.json").read_text())["learners"]
    saved = load_file(out / "model.safetensors")
    refusal = r"not allowed \(tests\.test_learners\.Payload\)"
    for target in ("m0:linear", "*:boosted", "*:svm"):  # (a boosted learner saved before LightGBM is a skops file)
        payload = pack([dumps(Payload() if name == target else None) for name in names * 3])
        saved["learners._extra_state"] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        save_file(saved, planted / "model.safetensors")
        Payload.ran = False
        with pytest.raises(ValueError, match=refusal):
            load_run(planted)
        assert not Payload.ran
    with pytest.raises(ValueError, match="cannot be read"):
        loads(b"not a zip file", "planted.skops")


class Payload:
    ran = False

    def __setstate__(self, state):
        Payload.ran = True


def test_learners_refuse_a_saved_state_of_another_layout():
    learners = Learners(["a:linear"], ["a"], 2)
    with pytest.raises(ValueError, match="byte tensor"):
        learners.set_extra_state(torch.zeros(3))
    with pytest.raises(ValueError, match="packed list of saved learners"):
        learners.set_extra_state(torch.frombuffer(bytearray(dumps([{"b:linear": None}])), dtype=torch.uint8))
    with pytest.raises(ValueError, match="do not add up"):
        learners.set_extra_state(torch.frombuffer(bytearray(pack([b"abc"])[:-1]), dtype=torch.uint8))


def test_learners_none_trains_networks_only(tmp_path):
    metrics = train_run(tiny_config(folds=2, epochs=1, learners=("none",)), tmp_path / "run")
    assert not any(":" in r.partition(":")[2] for r in metrics["strategy_summary"]["fusion_scores"])
    assert "learners" not in json.loads((tmp_path / "run" / "model.json").read_text())


def test_a_reference_row_reports_like_a_run_with_missing_modalities_handled_as_a_user_would(tmp_path):
    config = tiny_config(strategy="joint")
    for kind in ("linear", "svm", "boosted"):
        result = run_reference(config, kind, tmp_path / kind, rates=(0.5,))
        test = result["metrics"]["test"]
        assert 0.5 < test["fused"]["accuracy"] <= 1 and set(test["unimodal"]) == {"m0", "m1"}
        assert result["missing"]["0.5"]["missing"]["realised_share"] > 0.2
        assert result["missing"]["0.5"]["accuracy"] < test["fused"]["accuracy"]
    again = run_reference(config, "linear", tmp_path / "linear", rates=(0.5,))  # finished: read back
    assert again["metrics"] == json.loads((tmp_path / "linear" / "metrics.json").read_text())
    with pytest.raises(ValueError, match="unknown reference row 'sklearn:forest'"):
        reference_kind("sklearn:forest")


def test_the_benchmark_runs_reference_rows_on_the_same_split_and_seed(tmp_path):
    base = {"dataset": "synthetic", "dataset_options": TINY, "epochs": 1, "folds": 1, "hidden": (16,), "dim": 8}
    grid = cells(BenchmarkConfig(strategies=("joint", "sklearn:linear"), seeds=(0,)), ["m0", "m1"])
    results = run_grid(grid, base, tmp_path / "bench", missing_rates=(0.5,), jobs=1, progress=False)
    reference = next(r for c, r in results.items() if c.label == "sklearn:linear")
    joint = next(r for c, r in results.items() if c.label == "joint")
    assert reference["metrics"]["seed"] == joint["metrics"]["seed"] == 0
    assert set(reference["missing"]) == set(joint["missing"]) == {"0.5"}
    assert len(list((tmp_path / "bench" / "runs").glob("sklearn-linear-seed0-*"))) == 1


def test_a_boosted_learner_saved_as_scikit_learns_boosting_still_loads_to_the_same_answers():
    from altmodal.learners import _loaded
    from altmodal.reference import hist_boosting

    rng = np.random.default_rng(1)
    label = np.repeat([0, 1], 30)
    x = (rng.normal(size=(60, 4)) + label[:, None]).astype(np.float32)
    model = hist_boosting(label, 0).fit(x, label)
    again = _loaded(dumps(model), "*:boosted")
    assert np.array_equal(log_proba(again, x, 2), log_proba(model, x, 2))
