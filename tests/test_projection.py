import pytest
import torch
from torch import nn

from altmodal.basis_projection import FeatureBasisProjector, augment, project_out, span_basis, top_directions
from altmodal.projection import (
    HeadProjector,
    change_ratios,
    owm_update,
    project,
    reference_alpha,
    sgd_update,
    survival,
)


def test_owm_update_by_hand():
    P = torch.eye(2, dtype=torch.float64)
    h = torch.tensor([1.0, 0.0], dtype=torch.float64)
    # k = h; P - h h^T / (0.1 + 1)
    expected = torch.tensor([[1 - 1 / 1.1, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(owm_update(P, h, 0.1), expected)


def test_after_an_update_P_h_is_nearly_zero_and_P_stays_symmetric_psd():
    torch.manual_seed(0)
    d = 16
    P = torch.eye(d, dtype=torch.float64)
    for _ in range(50):
        h = torch.randn(d, dtype=torch.float64)
        P = owm_update(P, h, alpha=1e-3)
        assert torch.linalg.vector_norm(P @ h) < 1e-2 * torch.linalg.vector_norm(h)
        assert torch.allclose(P, P.T, atol=1e-10)
        eigenvalues = torch.linalg.eigvalsh(P)
        assert eigenvalues.min() > -1e-9 and eigenvalues.max() < 1 + 1e-9


def test_a_projected_step_barely_changes_the_answer_on_earlier_features():
    torch.manual_seed(1)
    C, d = 5, 32
    W = torch.randn(C, d)
    h_prev = torch.randn(d).abs()
    P = owm_update(torch.eye(d), h_prev, alpha=1e-3)
    grad = torch.randn(C, d)
    plain = ((W - 0.1 * grad) @ h_prev - W @ h_prev).norm()
    projected = ((W - 0.1 * project(grad, P)) @ h_prev - W @ h_prev).norm()
    assert projected < 0.01 * plain


def test_project_modes():
    grad = torch.tensor([[1.0, 2.0]])
    P = torch.tensor([[0.5, 0.0], [0.0, 0.0]])
    assert torch.equal(project(grad, P), torch.tensor([[0.5, 0.0]]))
    assert torch.equal(project(grad, P, "add"), torch.tensor([[1.5, 2.0]]))
    with pytest.raises(ValueError, match="unknown projection mode 'sideways'"):
        project(grad, P, "sideways")


def test_reference_alpha_schedule():
    assert reference_alpha(0, 10) == pytest.approx(0.1)
    assert reference_alpha(5, 10) == pytest.approx(0.1**1.5)
    assert reference_alpha(10, 10) == pytest.approx(0.01)


def test_projector_takes_size_dtype_and_device_from_the_head():
    head = nn.Linear(7, 3).double()
    projector = HeadProjector(head, ["a", "b"])
    assert projector.P.shape == (7, 7) and projector.P.dtype == torch.float64
    assert torch.equal(projector.P, torch.eye(7, dtype=torch.float64))
    assert set(projector.state_dict()) == {"P", "means", "seen", "steps"}


def test_projector_step_projects_the_weight_gradient_and_not_the_bias():
    head = nn.Linear(3, 2)
    head.weight.grad = torch.ones(2, 3)
    head.bias.grad = torch.ones(2)
    projector = HeadProjector(head, ["a"], h_source="batch", alpha=0.5)
    h = torch.tensor([1.0, 0.0, 0.0])
    projector.step(head.weight, "a", h, alpha=0.5)
    expected_P = owm_update(torch.eye(3), h, 0.5)
    assert torch.allclose(projector.P, expected_P)
    assert torch.allclose(head.weight.grad, torch.ones(2, 3) @ expected_P.T)
    assert torch.equal(head.bias.grad, torch.ones(2))


def test_running_mean_source_is_an_ema_per_modality():
    head = nn.Linear(2, 2)
    projector = HeadProjector(head, ["a", "b"], momentum=0.5)
    assert torch.equal(projector.feature("a", torch.tensor([2.0, 0.0])), torch.tensor([2.0, 0.0]))
    assert torch.equal(projector.feature("a", torch.tensor([0.0, 2.0])), torch.tensor([1.0, 1.0]))
    assert torch.equal(projector.feature("b", torch.tensor([4.0, 4.0])), torch.tensor([4.0, 4.0]))


def test_skip_first_and_normalisation():
    head = nn.Linear(4, 2)
    head.weight.grad = torch.ones(2, 4)
    projector = HeadProjector(head, ["a"], h_source="batch", skip_first=True, normalize=True)
    projector.step(head.weight, "a", torch.ones(4), alpha=0.1)
    assert torch.equal(projector.P, torch.eye(4)) and torch.equal(head.weight.grad, torch.ones(2, 4))
    projector.step(head.weight, "a", torch.ones(4), alpha=0.1)
    assert torch.linalg.matrix_norm(projector.P) == pytest.approx(1.0)


# ----- OGD and PCA-OGD ---------------------------------------------------------------------------


def test_ogd_projection_leaves_the_stored_features_logits_unchanged():
    torch.manual_seed(0)
    head = nn.Linear(16, 4)
    projector = FeatureBasisProjector(head, ["a", "b"], method="ogd", memory=6)
    stored = torch.randn(6, 16).relu()
    projector.push("b", stored)
    projector.refresh()
    head.weight.grad, head.bias.grad = torch.randn(4, 16), torch.randn(4)
    before_stored, fresh = head(stored).detach(), torch.randn(5, 16)
    before_new = head(fresh).detach()
    projector.step(head, "a", torch.randn(3, 16))
    with torch.no_grad():
        for p in head.parameters():
            p -= 0.5 * p.grad
    assert torch.allclose(head(stored), before_stored, atol=1e-5)
    assert (head(fresh) - before_new).abs().max() > 0.1  # the step did move the head elsewhere
    assert projector.state_dict()["stored"].tolist() == [3, 6]  # a's step stored a's features


def test_ogd_step_of_a_modality_does_not_project_against_its_own_features():
    head = nn.Linear(3, 2)
    projector = FeatureBasisProjector(head, ["a", "b"], method="ogd", memory=2)
    projector.push("a", torch.tensor([[1.0, 0.0, 0.0]]))
    projector.refresh()
    head.weight.grad, head.bias.grad = torch.ones(2, 3), torch.ones(2)
    projector.step(head, "a", torch.zeros(0, 3))
    assert torch.equal(head.weight.grad, torch.ones(2, 3)) and torch.equal(head.bias.grad, torch.ones(2))
    projector.step(head, "b", torch.zeros(0, 3))  # b is projected against a's [1, 0, 0, 1]
    assert torch.allclose(head.weight.grad, torch.tensor([[0.0, 1.0, 1.0]] * 2), atol=1e-6)
    assert torch.allclose(head.bias.grad, torch.zeros(2), atol=1e-6)


def test_span_basis_and_project_out_by_hand():
    vectors = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    Q = span_basis(vectors)
    assert Q.shape == (3, 2) and torch.allclose(Q.T @ Q, torch.eye(2), atol=1e-6)
    grad = torch.tensor([[1.0, -1.0, 5.0]])
    assert torch.allclose(project_out(grad, Q), torch.tensor([[1.0, -1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(augment(torch.zeros(2, 2)), torch.tensor([[0.0, 0.0, 1.0]] * 2))


def test_pca_basis_spans_the_top_uncentered_directions():
    generator = torch.Generator().manual_seed(0)
    e = torch.eye(8, dtype=torch.float64)
    n = 500
    # A large mean along e0, spread along e1, a little along e2, tiny noise elsewhere.
    pool = 20 * e[0] + 3 * torch.randn(n, 1, generator=generator, dtype=torch.float64) * e[1]
    pool = pool + 0.5 * torch.randn(n, 1, generator=generator, dtype=torch.float64) * e[2]
    pool = pool + 1e-3 * torch.randn(n, 8, generator=generator, dtype=torch.float64)
    Q = top_directions(pool, k=5, energy=0.99)
    assert Q.shape[1] == 2  # e0 (the mean, 400 of ~409.3) and e1 (9) reach 99%; e2 (0.25) is left
    inside = [float((Q @ Q.T @ e[i]).norm()) for i in range(3)]
    assert inside[0] == pytest.approx(1, abs=1e-3) and inside[1] == pytest.approx(1, abs=1e-3) and inside[2] < 0.01
    assert top_directions(pool, k=1, energy=0.99).shape[1] == 1
    assert top_directions(pool, k=5, energy=1.0).shape[1] == 5


def test_pca_memory_is_a_fifo_pool():
    head = nn.Linear(2, 2)
    projector = FeatureBasisProjector(head, ["a"], method="pca-ogd", memory=3, k=1)
    projector.push("a", torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    projector.push("a", torch.tensor([[3.0, 0.0], [4.0, 0.0]]))
    assert sorted(projector.stored_features("a")[:, 0].tolist()) == [2.0, 3.0, 4.0]
    assert set(projector.state_dict()) == {"memory", "stored", "others", "steps"}


def test_basis_projector_counts_come_back_with_its_state():
    head = nn.Linear(2, 2)
    head.weight.grad, head.bias.grad = torch.ones(2, 2), torch.ones(2)
    saved = FeatureBasisProjector(head, ["a", "b"], method="ogd", memory=3, refresh_every=2)
    saved.step(head, "a", torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    loaded = FeatureBasisProjector(head, ["a", "b"], method="ogd", memory=3, refresh_every=2)
    loaded.load_state_dict(saved.state_dict())
    assert loaded.host_stored == [2, 0] and loaded.host_steps == 1
    assert torch.equal(loaded.stored_features("a"), saved.stored_features("a"))


def test_each_modality_is_projected_against_all_the_others():
    head = nn.Linear(3, 2)
    projector = FeatureBasisProjector(head, ["a", "b", "c"], method="ogd", memory=1)
    for m, row in zip("abc", torch.eye(3)):
        projector.push(m, row[None] * 2)
    projector.refresh()
    e = torch.eye(4)
    spans = [projector.others[j] @ projector.others[j].T for j in range(3)]
    # "a" must keep b's [0, 2, 0, 1] and c's [0, 0, 2, 1] but may move along its own [2, 0, 0, 1].
    assert torch.allclose(spans[0] @ torch.tensor([0.0, 2, 0, 1]), torch.tensor([0.0, 2, 0, 1]), atol=1e-6)
    assert torch.allclose(spans[0] @ torch.tensor([0.0, 0, 2, 1]), torch.tensor([0.0, 0, 2, 1]), atol=1e-6)
    assert float(torch.linalg.matrix_rank(spans[0])) == 2 and float((spans[0] @ e[0]).norm()) < 0.99


def test_survival_and_change_ratios_by_hand():
    P = torch.diag(torch.tensor([1.0, 0.1]))  # the second direction mostly protected
    update = torch.tensor([[0.0, 2.0]])
    assert float(survival(P, update)) == pytest.approx(0.1)
    h = torch.tensor([[0.0, 1.0]])
    moved = update @ P.T  # a projected update
    ratios = change_ratios(P, moved, update, gradient=torch.tensor([[0.0, 1.0]]), lr=0.5, protected=h)
    assert float(ratios["guarantee"]) == pytest.approx(1.0)
    assert float(ratios["leak"]) == pytest.approx(0.2 / 0.05)  # the update is 4x the lr-scaled gradient


def test_relax_pulls_P_towards_the_identity():
    head = torch.nn.Linear(3, 2)
    projector = HeadProjector(head, ["a"])
    u = torch.tensor([1.0, 0.0, 0.0])
    projector.P.sub_(0.8 * torch.outer(u, u))
    for _ in range(4):
        projector.relax(0.5**0.25)
    assert torch.allclose(torch.eye(3) - projector.P, 0.4 * torch.outer(u, u), atol=1e-6)
    projector.reset()
    assert torch.equal(projector.P, torch.eye(3))


def test_sgd_update_by_hand():
    kept = {"gradient": torch.tensor([[1.0, 2.0]]), "before": torch.tensor([[10.0, 0.0]]), "buffer": torch.ones(1, 2)}
    group = {"lr": 0.5, "weight_decay": 0.1, "momentum": 0.9}
    assert torch.allclose(sgd_update(kept, group), -0.5 * torch.tensor([[1.0 + 1.0 + 0.9, 2.0 + 0.9]]))


def test_the_head_step_projects_the_optimizers_whole_update_and_reports_it():
    torch.manual_seed(0)
    head = nn.Linear(6, 3)
    projector = HeadProjector(head, ["a", "b"], alpha=1e-4, target="update", momentum=0.0)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    h = {m: torch.rand(6) for m in "ab"}
    for m in ("a", "b", "a", "b"):  # momentum builds up across the modalities' steps
        head(torch.rand(5, 6)).square().sum().backward()
        kept = projector.before_step(head.weight, m, h[m], 1e-4, optimizer, stats=True)
        answer = head.weight.detach() @ h["a"]
        optimizer.step()
        stats = projector.after_step(head.weight, m, kept, optimizer, stats=True)
        optimizer.zero_grad()
    moved = float((head.weight.detach() @ h["a"] - answer).norm())
    assert moved < 1e-3 * float(kept["gradient"].norm())  # b's last step kept a's answer
    assert set(stats) == {"survival", "log10_guarantee", "log10_leak"}
    assert abs(float(stats["log10_guarantee"])) < 0.05  # the change is the one the projection allows


def test_a_projected_update_is_kept_to_the_float32_rounding_of_the_weight():
    """What lets the late epochs exceed the allowed change: once P h is tiny, the allowed change
    of W h is below the rounding of W's entries, which float32 cannot hold (float64 can)."""
    torch.manual_seed(0)
    h = torch.rand(16, dtype=torch.float64)
    P = torch.eye(16, dtype=torch.float64)
    for _ in range(3):
        P = owm_update(P, h, 1e-6)
    update, weight = torch.randn(3, 16, dtype=torch.float64) * 1e-2, torch.randn(3, 16, dtype=torch.float64)
    ratios = {}
    for dtype in (torch.float32, torch.float64):
        projector = HeadProjector(nn.Linear(16, 3, dtype=dtype), ["a"])
        projector.P.copy_(P)
        before = weight.to(dtype)
        moved = (before + update.to(dtype)).clone()
        projector.project_update(moved, before.clone())
        allowed = (update @ P.T @ h).norm()
        ratios[dtype] = float(((moved - before).double() @ h).norm() / allowed)
    assert ratios[torch.float64] == pytest.approx(1.0, abs=1e-6) and ratios[torch.float32] > 1.1
