"""A cross-fitted run's member jobs shared with a second process (altmodal.members)."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from altmodal.experiment import train_member
from altmodal.members import Abandoned, MemberJobs, claim, train_beside
from altmodal.threads import side_process, torch_threads
from tests.conftest import tiny_config


def member_of(config, k):
    return dataclasses.replace(config, data=dataclasses.replace(config.data, fold=k))


def test_a_job_goes_to_the_first_claim_and_to_none_once_the_run_has_ended(tmp_path):
    claims = tmp_path / "claims"
    claims.mkdir()
    assert claim(str(claims), "networks-3") and not claim(str(claims), "networks-3")
    assert claim(str(claims), "learners-3")
    claims.joinpath("networks-3").unlink()
    claims.joinpath("learners-3").unlink()
    claims.rmdir()
    assert not claim(str(claims), "networks-2")
    with pytest.raises(RuntimeError, match="has ended"):
        Abandoned(str(claims)).on_epoch_end(None, {})


def test_a_member_trained_in_the_second_process_is_the_one_trained_in_the_run(tmp_path):
    member = member_of(tiny_config(folds=3, epochs=2), 3)
    for name in ("side", "here"):
        (tmp_path / f"claims-{name}").mkdir()
    with torch_threads(2):
        side = side_process()
        assert side is not None
        claims = str(tmp_path / "claims-side")
        beside = side.submit(train_beside, claims, train_member, member, str(tmp_path / "side"), None, 1)
        (outputs, order) = beside.result()
    claims = str(tmp_path / "claims-here")
    here, here_order = train_beside(claims, train_member, member, str(tmp_path / "here"), None, 1)
    assert (order == here_order).all() and torch.equal(outputs.index, here.index)
    assert torch.equal(outputs.fused, here.fused)
    assert all(torch.equal(outputs.unimodal[m], here.unimodal[m]) for m in here.unimodal)
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("side", "here"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert train_beside(claims, train_member, member, str(tmp_path / "again"), None, 1) is None  # taken


def test_without_a_second_process_the_run_does_every_job(tmp_path):
    config = tiny_config(folds=3, epochs=2)
    folds = [member_of(config, k) for k in (1, 2, 3)]
    paths = [tmp_path / str(k) for k in (1, 2, 3)]
    with MemberJobs(None, folds, paths, None, None, 1, True, train_member) as jobs:
        assert all(jobs.here(k) for k in (1, 2, 3))
        assert jobs.claims is None and not jobs.fits and not jobs.trains


def test_learners_shared_one_at_a_time_between_processes_are_those_one_process_fits(tmp_path):
    from altmodal.data.registry import load_splits
    from altmodal.experiment import run_learners
    from altmodal.members import fit_claimed

    config = tiny_config(folds=3)
    learners = run_learners(config, load_splits(config.data, 0), {})
    member = member_of(config, 2)
    alone = fit_claimed(None, learners, member, None)
    claims = tmp_path / "claims"
    claims.mkdir()
    assert claim(str(claims), "learners-2-1")  # the other process took the second learner
    here = fit_claimed(str(claims), learners, member, None, backwards=True)
    assert list(here[0]) == [n for i, n in enumerate(learners.names) if i != 1]
    assert fit_claimed(str(claims), learners, member, None) is None  # every one taken: nothing loaded, none fitted
    for name, answer in here[2].items():
        assert (answer == alone[2][name]).all()
    assert len(learners.names) >= 3 and all(f"learners-2-{i}" in {p.name for p in claims.iterdir()} for i in range(3))
