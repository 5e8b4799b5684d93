"""Training a real model on the simulated chip (issue 13): mnist-mlp on scikit-learn's 8x8
handwritten digits, every step computed by the tiles' vertices (simulator/train.py)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

import ipusim_cli  # noqa: E402
from simulator.train import TrainError, load_dataset, train  # noqa: E402


def test_digits_training_learns():
    r = train("mnist-mlp", data="digits", steps=40, batch=32, optimizer="sgd")
    assert len(r.losses) == 40 and all(np.isfinite(r.losses))
    assert np.mean(r.losses[-5:]) < 0.5 * r.losses[0]       # ln(10) = 2.30 at the start
    assert r.accuracy > 0.8                                   # chance is 0.1
    assert r.test_samples == 359 and r.train_samples == 1438
    assert 0 < r.seconds_per_step < 1e-2 and r.eval_seconds > 0
    # the accuracy computed on the chip is the trained weights' (a host forward pass agrees)
    _, _, xte, yte = load_dataset("digits")
    w = r.weights
    h = np.maximum(xte.reshape(len(yte), -1) @ w["fc1.weight"].T + w["fc1.bias"], 0)
    host = np.mean(np.argmax(h @ w["fc2.weight"].T + w["fc2.bias"], axis=1) == yte)
    assert r.accuracy == pytest.approx(host, abs=1.5 / len(yte))


def test_train_command(capsys, tmp_path):
    out = tmp_path / "train.json"
    assert ipusim_cli.main(["train", "mnist-mlp", "--data", "digits", "--steps", "3", "--batch", "16",
                            "--optimizer", "adam", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "step 3  loss" in text and "held out" in text and "us simulated per step" in text
    assert out.exists()


@pytest.mark.parametrize("kw, msg", [(dict(steps=0), "steps and batch must be positive"),
                                     (dict(data="mnist"), "unknown data set 'mnist'"),
                                     (dict(model="resnet50"), "input samples of shape"),
                                     (dict(optimizer="rmsprop"), "unknown optimizer"),
                                     (dict(batch=5000), "exceeds the 1438 training samples")])
def test_bad_train_options(kw, msg):
    with pytest.raises(TrainError, match=msg):
        train(**dict(dict(steps=1, batch=8), **kw))


def test_bad_batches_named():
    """Labels outside the classes or not integers: one error naming the input; NaN in the data
    is computed as IEEE does (the loss is NaN), never a crash."""
    from models import get_model
    from simulator.train import ChipTrainer
    tr = ChipTrainer(get_model("mnist-mlp", batch=2, hidden=8, image_size=8), "sgd")
    x = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(TrainError, match=r"input 'labels': expected integers in \[0, 10\)"):
        tr.step(x, np.array([3, 10]))
    with pytest.raises(TrainError, match=r"input 'labels': expected integers"):
        tr.step(x, np.array([0.5, 1.0]))
    with pytest.raises(TrainError, match=r"input 'input': expected shape \(2, 1, 8, 8\)"):
        tr.step(np.zeros((3, 1, 8, 8), np.float32), np.array([1, 2]))
    x[0, 0, 0, 0] = np.nan
    assert np.isnan(tr.step(x, np.array([1, 2])))
