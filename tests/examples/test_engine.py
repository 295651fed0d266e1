"""examples/dsta engine.py: the loop pieces (train_step, train_one_epoch) on stand-in batches and models."""
import pytest
import torch
from dsta import engine
from dsta.distributed import DistInfo


def _batch(n: int, skipped: int = 0, unreadable=()):
    return {"meta": [{}] * n, "skipped": skipped, "unreadable": list(unreadable)}


def _state():
    return {"step": 0, "epoch_step": 0, "epoch_sample": 0, "epoch_loss": [0.0, 0], "epoch_skipped": [0, None]}


def test_train_one_epoch_keeps_the_position_and_counts():
    """Batch size 4, 10 samples: the position is capped at `end`, an all-unreadable batch is counted and
    skipped, the losses are summed, and the first unreadable message is kept."""
    losses, seen = iter([1.0, 2.0]), []
    batches = [_batch(4), _batch(0, skipped=4, unreadable=["a.jpg: unreadable"]), _batch(1, 1, ["b.jpg"])]
    state = _state()
    out = engine.train_one_epoch(lambda b: next(losses), batches, state, batch_size=4, end=10,
                                 after_step=seen.append, should_stop=lambda: None)  # fmt: skip
    assert out is None and seen == [1.0, 2.0]
    assert state["epoch_step"] == 3 and state["epoch_sample"] == 10
    assert state["epoch_loss"] == [3.0, 2] and state["epoch_skipped"] == [5, "a.jpg: unreadable"]


def test_train_one_epoch_stops_between_batches_never_after_the_last():
    asked = []

    def should_stop():
        asked.append(state["epoch_sample"])
        return "SIGTERM" if state["epoch_sample"] == 8 else None

    state = _state()
    out = engine.train_one_epoch(lambda b: 0.5, [_batch(4)] * 3, state, batch_size=4, end=10, should_stop=should_stop)
    assert out == "SIGTERM" and asked == [4, 8] and state["epoch_step"] == 2 and state["epoch_sample"] == 8
    state, asked = _state(), []
    assert engine.train_one_epoch(lambda b: 0.5, [_batch(4)], state, batch_size=4, end=4, should_stop=should_stop) is None
    assert asked == []  # the epoch's last batch: the epoch ends normally, the caller decides


def test_train_one_epoch_refuses_an_unreadable_batch_under_ddp():
    with pytest.raises(engine.DataError, match="a whole batch was unreadable.*x.jpg"):
        engine.train_one_epoch(lambda b: 0.0, [_batch(0, 2, ["x.jpg"])], _state(), batch_size=2, end=2,
                               distributed=True)  # fmt: skip


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, frames):
        return self.fc(frames)

    def loss(self, out, target, weight):
        return ((out - target) ** 2 * weight).mean()


def _step(model, frames, clip_grad=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = {"frames": frames, "target": torch.zeros(4, 2), "target_weight": torch.ones(4, 2)}
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return engine.train_step(model, model, batch, opt, scaler, DistInfo(), clip_grad=clip_grad, where="step 7")


def test_train_step_returns_the_loss_and_steps_the_optimizer():
    torch.manual_seed(0)
    model, frames = _Linear(), torch.randn(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        expected = float(model.loss(model(frames), torch.zeros(4, 2), torch.ones(4, 2)))
    assert _step(model, frames, clip_grad=1.0) == pytest.approx(expected, rel=1e-6)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_train_step_stops_before_the_update_on_a_non_finite_loss():
    model = _Linear()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(engine.NonFiniteLossError, match=r"non-finite training loss nan at step 7; stopped before"):
        _step(model, torch.full((4, 3), float("nan")))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))

