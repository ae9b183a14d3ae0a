"""Shared test setup: one thread, headless matplotlib, a socket blocker, small helpers."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("KERAS_BACKEND", "torch")

import socket  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


class NetworkBlocked(RuntimeError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket (other than AF_UNIX) fails the test."""
    real_socket = socket.socket

    class Guard(real_socket):
        def __init__(self, family=socket.AF_INET, *args, **kwargs):
            if family not in (getattr(socket, "AF_UNIX", None),):
                raise NetworkBlocked(f"network access attempted (family {family})")
            super().__init__(family, *args, **kwargs)

    def no_connection(*args, **kwargs):
        raise NetworkBlocked("network access attempted (create_connection)")

    monkeypatch.setattr(socket, "socket", Guard)
    monkeypatch.setattr(socket, "create_connection", no_connection)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(NetworkBlocked("dns lookup")))
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def model_state(module: torch.nn.Module):
    """Everything about a torch module that trustmap must leave unchanged."""
    return {
        "weights": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "training": [m.training for m in module.modules()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                  for m in module.modules()],
    }


def assert_same_state(before, after):
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]
    for k in before["weights"]:
        assert torch.equal(before["weights"][k], after["weights"][k]), k
