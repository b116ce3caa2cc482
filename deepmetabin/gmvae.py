"""The Gaussian-mixture VAE and its loss, with the neighbour ("must-link") reconstruction term.

Generative model: y ~ Uniform(K); z | y ~ N(mu_y, diag(sigma_y^2)) with mu_y, sigma_y learned per
component; x | z ~ N(f(z), I) through a decoder whose output layer is linear (features are
normalised, not in [0, 1]).

Inference: q(y | x) = softmax(g(x)), sampled with the Gumbel-softmax relaxation at temperature
``tau`` (annealed by the training loop, see :mod:`deepmetabin.train`); q(z | x, y) =
N(m(x, y), diag(s(x, y)^2)).

Loss per contig i (all terms are config weights; see :class:`LossWeights`):

    rec(x_i, x̂_i) + kl_weight * (KL_z + KL_y) + neighbour_weight * sum_j w_ij rec(x_i, x̂_{j->i})

* ``rec`` weighs the TNF block by ``tnf_share`` (default 0.15) and the depth block by
  ``1 - tnf_share`` (0.85); each block's squared error is divided by the block's summed variance
  in the data, so predicting the mean scores 1 per block whatever the number of samples.
* KL_z = KL(q(z|x,y) || p(z|y)) in closed form with the relaxed y (prior mean/variance are the
  y-weighted mixture of the component parameters); KL_y = KL(q(y|x) || Uniform(K)).
* x̂_{j->i} decodes z sampled from q(z | x_j, y_j) of neighbour j of contig i in the refined
  k-NN graph; w_ij = softmax over j of -||x_i - x_j||^2 / (2 s^2) (a Gaussian kernel of bandwidth
  s), so the weights of a contig's neighbours sum to 1. Contigs without neighbours skip the term.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (see module docstring)."""

    tnf_share: float = 0.15
    kl_weight: float = 0.005
    neighbour_weight: float = 1.0


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class GMVAE(nn.Module):
    """Gaussian-mixture VAE over (B, dim) feature rows.

    Args:
        dim: input width D (103 TNF columns + S depth columns).
        latent: width d of z.
        k: number of mixture components K.
        hidden: widths of the hidden layers of every encoder/decoder MLP.
    """

    def __init__(self, dim: int, latent: int = 32, k: int = 32, hidden: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        self.dim, self.latent, self.k = dim, latent, k
        h = list(hidden)
        self.enc_y = nn.Sequential(_mlp([dim] + h), nn.Linear(h[-1], k))
        self.enc_z = _mlp([dim + k] + h)
        self.z_mu = nn.Linear(h[-1], latent)
        self.z_logvar = nn.Linear(h[-1], latent)
        self.dec = nn.Sequential(_mlp([latent] + h[::-1]), nn.Linear(h[0], dim))  # linear output layer
        gen = torch.Generator().manual_seed(0)
        self.prior_mu = nn.Parameter(torch.randn(k, latent, generator=gen))
        self.prior_logvar = nn.Parameter(torch.zeros(k, latent))

    def encode(self, x: torch.Tensor, tau: float, hard: bool = False) -> dict[str, torch.Tensor]:
        """q(y|x) logits/probabilities, a relaxed y sample (B, K), and q(z|x,y) mean/logvar and a z sample (B, d)."""
        logits = self.enc_y(x)
        prob = F.softmax(logits, dim=-1)
        y = F.gumbel_softmax(logits, tau=tau, hard=hard) if self.training else prob
        hz = self.enc_z(torch.cat([x, y], dim=-1))
        mu, logvar = self.z_mu(hz), self.z_logvar(hz).clamp(-12.0, 8.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return {"logits": logits, "prob": prob, "y": y, "mu": mu, "logvar": logvar, "z": z}

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)


def block_weights(x: np.ndarray, tnf_dim: int, tnf_share: float) -> np.ndarray:
    """(D,) float32 per-column weights of the reconstruction error (see module docstring)."""
    var = x.var(axis=0).astype(np.float64)
    w = np.empty(x.shape[1])
    tv, dv = var[:tnf_dim].sum(), var[tnf_dim:].sum()
    has_depth = x.shape[1] > tnf_dim
    share = tnf_share if has_depth else 1.0
    w[:tnf_dim] = share / max(tv, 1e-12)
    if has_depth:
        w[tnf_dim:] = (1 - share) / max(dv, 1e-12)
    return w.astype(np.float32)


def reconstruction(x: torch.Tensor, xhat: torch.Tensor, col_w: torch.Tensor) -> torch.Tensor:
    """(B,) weighted squared reconstruction error per row."""
    return ((x - xhat) ** 2 * col_w).sum(-1)


def kl_terms(model: GMVAE, enc: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) KL_z and (B,) KL_y of each row (see module docstring)."""
    y = enc["y"]
    p_mu = y @ model.prior_mu
    p_var = y @ torch.exp(model.prior_logvar)
    q_var = torch.exp(enc["logvar"])
    kl_z = 0.5 * (torch.log(p_var) - enc["logvar"] + (q_var + (enc["mu"] - p_mu) ** 2) / p_var - 1).sum(-1)
    logp = F.log_softmax(enc["logits"], dim=-1)
    kl_y = (enc["prob"] * (logp + math.log(model.k))).sum(-1)
    return kl_z, kl_y


def neighbour_table(
    x: np.ndarray, graph: sp.csr_matrix, *, max_neighbours: int = 6, bandwidth: float | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Padded neighbours and their kernel weights for the must-link term.

    Args:
        x: (N, D) features.
        graph: (N, N) symmetric CSR of edge distances (any nonzero entry is an edge).
        max_neighbours: keep at most this many nearest neighbours per contig.
        bandwidth: kernel width s; default the median edge distance (1.0 without edges).

    Returns:
        index: (N, M) int64 neighbour rows, padded with the row itself;
        weight: (N, M) float32, softmax over real neighbours of -||x_i - x_j||^2 / (2 s^2), 0 on
            padding (each row sums to 1, or to 0 for a contig without neighbours);
        bandwidth: the s used.
    """
    graph = sp.csr_matrix(graph)
    n = x.shape[0]
    deg = np.diff(graph.indptr)
    m = int(min(max_neighbours, deg.max() if n and deg.size else 0)) or 1
    index = np.repeat(np.arange(n, dtype=np.int64)[:, None], m, axis=1)
    d2 = np.full((n, m), np.inf)
    for i in np.flatnonzero(deg):
        nb = graph.indices[graph.indptr[i] : graph.indptr[i + 1]]
        dist2 = ((x[nb] - x[i]) ** 2).sum(axis=1)
        order = np.argsort(dist2, kind="stable")[:m]
        index[i, : len(order)] = nb[order]
        d2[i, : len(order)] = dist2[order]
    if bandwidth is None:
        real = np.sqrt(d2[np.isfinite(d2)])
        bandwidth = float(np.median(real)) if real.size else 1.0
        bandwidth = bandwidth if bandwidth > 0 else 1.0
    logits = np.where(np.isfinite(d2), -d2 / (2 * bandwidth**2), -np.inf)
    rowmax = logits.max(axis=1, keepdims=True)
    rowmax[~np.isfinite(rowmax)] = 0.0
    e = np.exp(logits - rowmax)  # exp(-inf) = 0 on padding
    s = e.sum(axis=1, keepdims=True)
    weight = np.divide(e, s, out=np.zeros_like(e), where=s > 0)
    return index, weight.astype(np.float32), bandwidth


def sample_neighbours(index: torch.Tensor, weight: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A Monte-Carlo version of a neighbour table, for cheaper training steps.

    Per row, ``samples`` neighbours drawn with replacement with probability w_ij, each of weight
    1/``samples``: the expected neighbour term equals the full weighted sum over the M neighbours
    (unbiased), at ``samples`` instead of up to M encoder passes per contig. Rows without neighbours
    keep weight 0. Uses torch's global generator (seeded and checkpointed by the training loop).

    Args:
        index: (B, M) neighbour rows; weight: (B, M) weights, each row summing to 1 or 0.

    Returns:
        (B, samples) rows and (B, samples) weights.
    """
    has = weight.sum(-1) > 0
    probs = torch.where(has[:, None], weight, torch.ones_like(weight))
    pick = torch.multinomial(probs, samples, replacement=True)
    w = torch.where(has[:, None], torch.full(pick.shape, 1.0 / samples, device=weight.device), torch.zeros(pick.shape, device=weight.device))
    return torch.gather(index, 1, pick), w


def batch_loss(
    model: GMVAE,
    x: torch.Tensor,
    x_nb: torch.Tensor | None,
    w_nb: torch.Tensor | None,
    col_w: torch.Tensor,
    weights: LossWeights,
    tau: float,
) -> dict[str, torch.Tensor]:
    """Mean loss terms over a batch.

    Args:
        x: (B, D) rows; x_nb: (B, M, D) their neighbours' rows; w_nb: (B, M) kernel weights (pairs
            of weight 0, e.g. padding, are skipped; see :func:`sample_neighbours` for a sampled table).

    Returns:
        dict with scalar tensors ``loss`` (to minimise), ``rec``, ``kl_z``, ``kl_y``, ``neighbour``.
    """
    enc = model.encode(x, tau)
    rec = reconstruction(x, model.decode(enc["z"]), col_w)
    kl_z, kl_y = kl_terms(model, enc)
    total = rec + weights.kl_weight * (kl_z + kl_y)
    nb_term = torch.zeros_like(rec)
    if x_nb is not None and w_nb is not None and weights.neighbour_weight > 0:
        # only the (i, j) pairs with a weight: padding (weight 0) would cost a forward pass for nothing
        row, slot = torch.nonzero(w_nb > 0, as_tuple=True)
        if len(row):
            enc_nb = model.encode(x_nb[row, slot], tau)
            rec_nb = reconstruction(x[row], model.decode(enc_nb["z"]), col_w)
            nb_term = nb_term.index_add(0, row, w_nb[row, slot] * rec_nb)
            total = total + weights.neighbour_weight * nb_term
    return {
        "loss": total.mean(), "rec": rec.mean().detach(), "kl_z": kl_z.mean().detach(),
        "kl_y": kl_y.mean().detach(), "neighbour": nb_term.mean().detach(),
    }
