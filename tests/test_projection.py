import pytest
import torch
from torch import nn

from altmodal.projection import HeadProjector, owm_update, project, reference_alpha


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
