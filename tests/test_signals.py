"""A stop request (SIGINT/SIGTERM) is never forgotten: one that arrives after a block's last safe point still
stops the caller, so the pipeline does not go on to the next unit after a strategy or a fine-tune returns."""
import os
import signal

import pytest

from evoprune import signals


def _term():
    os.kill(os.getpid(), signal.SIGTERM)


def test_no_signal_no_interrupt():
    before = signal.getsignal(signal.SIGTERM)
    with signals.stop_on_signals():
        assert not signals.requested()
    assert signal.getsignal(signal.SIGTERM) is before


def test_request_after_the_last_safe_point_ends_the_block():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with signals.stop_on_signals():
            _term()
            assert signals.requested()  # the block's own safe points would see it
    assert not signals.requested() and signal.getsignal(signal.SIGTERM) is before


def test_nested_blocks_leave_it_to_the_outermost():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with signals.stop_on_signals():
            with signals.stop_on_signals():
                _term()
            reached.append("inner exited normally")  # the outer block's safe points still see the request
            assert signals.requested()
    assert reached


def test_an_exception_in_flight_is_not_replaced():
    with pytest.raises(ValueError):
        with signals.stop_on_signals():
            _term()
            raise ValueError("the block's own error")


def test_training_stopped_after_the_last_step(tmp_path, monkeypatch):
    """A signal during fit's final evaluation (after the last step's check): the state is saved and fit stops."""
    import torch

    from evoprune import train
    from evoprune.data import load_mini_cifar10, make_loaders
    from evoprune.models import create_model

    real = train.evaluate

    def evaluate_then_signal(*args, **kwargs):
        _term()
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", evaluate_then_signal)
    torch.manual_seed(0)
    before = signal.getsignal(signal.SIGTERM)
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train.fit(create_model("vgg11", width=0.125), make_loaders(load_mini_cifar10(), batch_size=32),
                  train.TrainConfig(epochs=1, max_steps=2), state_path=str(state), progress=False)
    assert state.exists() and signal.getsignal(signal.SIGTERM) is before


def test_ga_asked_to_stop_in_its_last_generation_stops_the_caller():
    """Without a checkpoint the GA has no later safe point: before the fix it returned normally and the request
    was lost (the pipeline then pruned the next unit)."""
    from evoprune.problems import planted_qp
    from evoprune.strategies.ga import ga

    def callback(gen, pop, fit):
        if gen == 3:
            _term()

    prob = planted_qp(n=24, k=6, seed=0)
    with pytest.raises(KeyboardInterrupt):
        ga(prob, budget=10_000, seed=0, pop_size=8, generations=3, callback=callback)
    assert ga(prob, budget=10_000, seed=0, pop_size=8, generations=3).evaluations > 0  # and nothing is left over
