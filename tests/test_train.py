"""GMVAE + training loop on tiny data made in the tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors

from deepmetabin.errors import RunFolderError
from deepmetabin.gmvae import GMVAE, LossWeights, batch_loss, block_weights, neighbour_table, sample_neighbours
from deepmetabin.train import EpochEvent, Trained, TrainConfig, train

DIM = 103 + 3


def two_groups(n=240, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, size=(2, DIM))
    labels = np.repeat([0, 1], n // 2)
    x = (centres[labels] + rng.normal(0, 0.6, size=(n, DIM))).astype(np.float32)
    return x, labels


def knn(x, k=3):
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    rows = np.repeat(np.arange(len(x)), k)
    g = sp.csr_matrix((dist[:, 1:].ravel(), (rows, idx[:, 1:].ravel())), shape=(len(x), len(x)))
    return g.maximum(g.T).tocsr()


SMALL = dict(latent=4, k=4, hidden=(32, 32), batch_size=32, threads=1, snapshot_size=50)


def test_loss_terms_finite_and_decreasing_and_groups_separate():
    x, labels = two_groups()
    events: list[EpochEvent] = []
    m = train(x, knn(x), TrainConfig(epochs=25, patience=100, **SMALL), callbacks=[events.append])
    assert len(events) == 25 and events[-1].latent.shape == (50, 4) and events[-1].components.shape == (50,)
    for e in events:
        assert all(np.isfinite(v) for v in e.losses.values())
    assert events[-1].losses["loss"] < 0.5 * events[0].losses["loss"]
    assert events[-1].losses["neighbour"] > 0
    z = m.transform(x)
    assert z.shape == (len(x), 4) and z.dtype == np.float32
    # the two groups end up apart in the latent space
    pred = (z @ np.linalg.svd(z - z.mean(0))[2][0] > np.median(z @ np.linalg.svd(z - z.mean(0))[2][0])).astype(int)
    assert adjusted_rand_score(labels, pred) > 0.9
    p = m.predict_proba(x)
    assert p.shape == (len(x), 4) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert list(m.history.columns[:6]) == ["loss", "rec", "kl_z", "kl_y", "neighbour", "val_rec"]


def test_neighbour_weights_sum_to_one():
    x, _ = two_groups(60)
    g = knn(x)
    g = g.tolil()
    g[5, :] = 0
    g[:, 5] = 0  # an isolated contig
    index, weight, bw = neighbour_table(x, g.tocsr(), max_neighbours=4)
    assert bw > 0
    sums = weight.sum(1)
    assert np.allclose(np.delete(sums, 5), 1, atol=1e-6) and sums[5] == 0
    # the nearer neighbour weighs more
    i = 0
    d = np.linalg.norm(x[index[i]] - x[i], axis=1)
    real = weight[i] > 0
    assert np.all(np.diff(weight[i][real][np.argsort(d[real])]) <= 1e-7)


def test_neighbour_pairs_of_weight_zero_are_skipped():
    """Padding (weight 0) costs nothing and changes nothing: whatever row pads the table, the loss and
    the random draws after it are the same."""
    import torch

    x, _ = two_groups(64)
    index, weight, _ = neighbour_table(x, knn(x), max_neighbours=6)
    assert (weight == 0).any()
    other = np.where(weight > 0, index, (index + 17) % len(x))  # different padding rows
    col_w = torch.as_tensor(block_weights(x, 103, 0.15))
    model = GMVAE(DIM, 4, 4, (32, 32))
    xt = torch.as_tensor(x)
    out = []
    for idx in (index, other):
        torch.manual_seed(3)
        terms = batch_loss(model, xt, xt[torch.as_tensor(idx)], torch.as_tensor(weight), col_w, LossWeights(), 1.0)
        out.append((terms["loss"].item(), terms["neighbour"].item(), torch.rand(1).item()))
    assert out[0] == out[1] and out[0][1] > 0


def test_sampled_neighbours_follow_the_weights():
    import torch

    index = torch.tensor([[5, 6, 7], [1, 1, 1], [2, 3, 4]])
    weight = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    torch.manual_seed(0)
    rows, w = sample_neighbours(index.repeat(2000, 1), weight.repeat(2000, 1), 2)
    rows, w = rows.reshape(2000, 3, 2), w.reshape(2000, 3, 2)
    share = [(rows[:, 0] == j).float().mean().item() for j in (5, 6, 7)]
    assert np.allclose(share, [0.7, 0.2, 0.1], atol=0.02)
    assert (w[:, 0] == 0.5).all() and (w[:, 1] == 0).all()  # no neighbours: no term
    assert (rows[:, 2] == 3).all() and (w[:, 2].sum(-1) == 1).all()


def test_training_with_sampled_neighbours_separates_groups():
    x, labels = two_groups()
    m = train(x, knn(x), TrainConfig(epochs=25, patience=100, neighbour_samples=1, **SMALL))
    z = m.transform(x)
    axis = z @ np.linalg.svd(z - z.mean(0))[2][0]
    assert adjusted_rand_score(labels, (axis > np.median(axis)).astype(int)) > 0.9
    assert m.history["neighbour"].iloc[-1] > 0 and m.history["loss"].iloc[-1] < 0.5 * m.history["loss"].iloc[0]


def test_save_load_round_trip_and_hash_check(tmp_path):
    x, _ = two_groups(80)
    m = train(x, knn(x), TrainConfig(epochs=3, **SMALL), ids_hash="abc")
    m.save(tmp_path / "model.pt")
    again = Trained.load(tmp_path / "model.pt", ids_hash="abc")
    assert np.array_equal(m.transform(x), again.transform(x))
    with pytest.raises(RunFolderError, match="other contigs"):
        Trained.load(tmp_path / "model.pt", ids_hash="zzz")


def test_same_seed_same_model():
    x, _ = two_groups(80)
    a = train(x, knn(x), TrainConfig(epochs=3, **SMALL)).transform(x)
    b = train(x, knn(x), TrainConfig(epochs=3, **SMALL)).transform(x)
    assert np.array_equal(a, b)


RESUME_SCRIPT = """
import sys, time, numpy as np
sys.path.insert(0, {tests!r})
from test_train import two_groups, knn, SMALL
from deepmetabin.train import train, TrainConfig
x, _ = two_groups(200)
cfg = TrainConfig(epochs=30, patience=100, checkpoint_every=1, **SMALL)
train(x, knn(x), cfg, checkpoint={ckpt!r}, ids_hash="h", callbacks=[lambda e: time.sleep(0.2)])
"""


def test_resume_after_kill_ends_where_uninterrupted_run_ends(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    code = RESUME_SCRIPT.format(tests=str(Path(__file__).parent), ckpt=str(ckpt))
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint was written before the kill"
    import torch

    done_before = torch.load(ckpt, weights_only=False)["epoch"]
    assert 0 < done_before < 30
    x, _ = two_groups(200)
    cfg = TrainConfig(epochs=30, patience=100, checkpoint_every=1, **SMALL)
    resumed = train(x, knn(x), cfg, checkpoint=ckpt, resume=True, ids_hash="h")
    straight = train(x, knn(x), cfg)
    assert len(resumed.history) == 30
    assert np.allclose(resumed.history["loss"], straight.history["loss"], rtol=0, atol=0)
    assert np.array_equal(resumed.transform(x), straight.transform(x))
    with pytest.raises(RunFolderError, match="other contigs, features, graph or settings"):
        train(x, knn(x), cfg, checkpoint=ckpt, resume=True, ids_hash="other")
    # the same contigs and settings on another graph: not the training the checkpoint belongs to
    other_graph = knn(x).tolil()
    other_graph[0, 1:] = 0
    other_graph[1:, 0] = 0
    other_graph = other_graph.tocsr()
    other_graph.eliminate_zeros()
    with pytest.raises(RunFolderError, match="graph"):
        train(x, other_graph, cfg, checkpoint=ckpt, resume=True, ids_hash="h")
    fresh = train(x, other_graph, cfg, checkpoint=ckpt, resume=True, ids_hash="h", restart_on_mismatch=True)
    assert np.array_equal(fresh.history["epoch"], np.arange(30))  # started over at epoch 0


def test_adam_matches_torch_adam_bit_for_bit_and_round_trips_its_state():
    import torch

    from deepmetabin.train import Adam

    def fit(make_opt, steps=40, state=None):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.BatchNorm1d(16), torch.nn.LeakyReLU(0.1), torch.nn.Linear(16, 3))
        opt = make_opt(list(net.parameters()))
        gen = torch.Generator().manual_seed(1)
        for _ in range(steps):
            loss = (net(torch.randn(32, 10, generator=gen)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net, opt

    ours, opt = fit(lambda p: Adam(p, lr=3e-3))
    theirs, _ = fit(lambda p: torch.optim.Adam(p, lr=3e-3))
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
    fresh = Adam(list(ours.parameters()), lr=3e-3)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.step_count == 40 and all(torch.equal(a, b) for a, b in zip(fresh.exp_avg_sq, opt.exp_avg_sq))
    with pytest.raises(ValueError):
        fresh.load_state_dict(torch.optim.Adam(list(ours.parameters())).state_dict())


def test_training_does_not_import_the_torch_compiler():
    """torch.optim's optimizers import torch._dynamo (2.4 s of CPU) on first use; training must not."""
    code = ("import sys\n"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from test_train import two_groups, knn, SMALL\n"
            "from deepmetabin.train import train, TrainConfig, Trained\n"
            "x, _ = two_groups(80)\n"
            "t = train(x, knn(x), TrainConfig(epochs=2, **SMALL))\n"
            "t.encode(x)\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
