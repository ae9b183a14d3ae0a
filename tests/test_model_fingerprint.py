"""The model fingerprint (provenance) is cached per model object, and every weight change is seen."""

import hashlib

import numpy as np
import torch
from torch import nn

import trustmap


def reference(module):
    """The fingerprint written out: sha256 of sorted state_dict names, shapes and bytes."""
    h = hashlib.sha256()
    for name, v in sorted(module.state_dict().items()):
        a = v.detach().cpu().contiguous().numpy()
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14, 3)).eval()


def test_fingerprint_follows_every_kind_of_weight_change():
    m = net()
    model = trustmap.load_model(m)
    first = model.fingerprint()
    seen = {first}
    assert first == reference(m)
    assert trustmap.load_model(m).fingerprint() == reference(m)  # a second wrapper: the cached digest
    with torch.no_grad():
        m[0].weight[0, 0, 0] += 0.5  # in place: the version counter moves
    assert model.fingerprint() == reference(m) and reference(m) not in seen
    seen.add(reference(m))
    m[4].weight.data[0, 0] -= 0.25  # through .data: the version counter does not move
    assert model.fingerprint() == reference(m) and reference(m) not in seen
    seen.add(reference(m))
    m[1].running_mean.data.copy_(torch.ones(4))  # a buffer
    assert model.fingerprint() == reference(m) and reference(m) not in seen
    seen.add(reference(m))
    m.load_state_dict(net().state_dict())  # back to the first weights
    assert model.fingerprint() == reference(m) == first
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m.train()
    nn.functional.cross_entropy(m(torch.randn(4, 1, 16)), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    assert model.fingerprint() == reference(m) and reference(m) not in seen


def test_explain_provenance_names_the_current_weights():
    m = net()
    x = np.random.default_rng(0).normal(size=(3, 1, 16)).astype("float32")
    a = trustmap.explain(m, x, "saliency")
    with torch.no_grad():
        m[4].bias.add_(1.0)
    b = trustmap.explain(m, x, "saliency")
    assert a.provenance["model"]["fingerprint"] == reference(net())
    assert b.provenance["model"]["fingerprint"] == reference(m) != a.provenance["model"]["fingerprint"]
