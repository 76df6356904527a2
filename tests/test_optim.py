"""The optimizer step and the learning-rate schedule."""

import copy

import pytest
import torch
from torch import nn

from altmodal.optim import build_optimizer, build_scheduler, lr_factor, plain_sgd, step
from altmodal.strategies import TrainConfig


def two_layers() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"momentum": 0.0},
        {"weight_decay": 0.0},
        {"optimizer": "adam"},
        {"optimizer": "adamw"},
    ],
)
def test_step_updates_a_subset_exactly_as_torch_steps_it(settings):
    # MLA-like steps: first only the last layer has gradients, later all (new momentum buffers
    # start mid-way); each step must match optimizer.step() to the last bit
    config = TrainConfig(lr=0.05, **settings)
    ours, theirs = two_layers(), two_layers()
    mine = build_optimizer(ours.parameters(), config, {"foreach": True})
    torch_opt = build_optimizer(theirs.parameters(), config, {"foreach": True})
    assert plain_sgd(mine) == (config.optimizer == "sgd")
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for k in range(5):
        for model, opt, mine_step in ((ours, mine, True), (theirs, torch_opt, False)):
            trained = list(model[2].parameters()) if k < 2 else list(model.parameters())
            for p in model.parameters():
                p.requires_grad_(any(p is q for q in trained))
            nn.functional.cross_entropy(model(x), y).backward()
            if mine_step:
                step(opt, trained)
            else:
                opt.step()
            for p in model.parameters():
                p.grad = None
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters())), k
    if plain_sgd(mine) and config.momentum > 0:  # the first layer's buffer started at step 3
        assert torch.equal(
            mine.state[ours[0].weight]["momentum_buffer"], torch_opt.state[theirs[0].weight]["momentum_buffer"]
        )


def test_step_leaves_parameters_without_a_gradient_and_their_state_alone():
    model = two_layers()
    opt = build_optimizer(model.parameters(), TrainConfig(lr=0.1), {"foreach": True})
    before = copy.deepcopy(model.state_dict())
    model[2].weight.grad = torch.ones_like(model[2].weight)
    step(opt, list(model.parameters()))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"2.weight"}
    assert set(opt.state) == {model[2].weight}


def test_the_schedule_follows_lr_factor_and_resumes_from_its_state():
    config = TrainConfig(lr=0.2, epochs=10, lr_step=3, lr_gamma=0.5, warmup_epochs=2)
    opt = build_optimizer(two_layers().parameters(), config)
    schedule = build_scheduler(opt, config)
    seen = []
    for _ in range(config.epochs):
        seen.append(opt.param_groups[0]["lr"])
        schedule.step()
    assert seen == [config.lr * lr_factor(e, config) for e in range(config.epochs)]
    assert seen[:4] == [0.2 / 3, 0.4 / 3, 0.2, 0.2]
    again = build_scheduler(build_optimizer(two_layers().parameters(), config), config)
    again.load_state_dict({"last_epoch": 7})
    assert again.optimizer.param_groups[0]["lr"] == seen[7]
