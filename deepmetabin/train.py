"""Training loop of the GMVAE: mini-batches carrying each contig's graph neighbours, Adam, early
stopping on a held-out reconstruction loss, per-epoch events for callbacks, atomic checkpoints that
a killed run resumes from, and the fitted model's sklearn-shaped API.

Gumbel-softmax temperature: annealed geometrically from ``tau_start`` (1.0) at the first epoch to
``tau_end`` (0.5) at the last configured epoch.

Determinism: the same ``seed`` gives the same model on CPU (batch order from a seeded numpy
generator, Gumbel and z noise from torch's seeded generator; both are saved in checkpoints, so a
resumed run ends exactly where an uninterrupted one would).
"""
from __future__ import annotations

import copy
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ._io import atomic_path, write_bytes
from .errors import RunFolderError
from .gmvae import GMVAE, LossWeights, batch_loss, block_weights, neighbour_table, sample_neighbours
from .tnf import TNF_DIM

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Model and training settings (all have defaults; see the module docstrings for meaning)."""

    latent: int = 32
    k: int = 32
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    tnf_share: float = 0.15
    kl_weight: float = 0.005
    neighbour_weight: float = 1.0
    max_neighbours: int = 6
    # neighbours sampled per contig and step (unbiased estimate of the neighbour sum); None = all of them.
    # 1 halved the time per epoch with F1 +0.003 (small) / +0.013 (medium), 3 seeds (benchmarks/ABLATION.md)
    neighbour_samples: int | None = 1
    bandwidth: float | None = None
    tau_start: float = 1.0
    tau_end: float = 0.5
    holdout: float = 0.05
    patience: int = 15
    # an epoch improves on the best only when its held-out loss is this share below it (relative, so the same on
    # any loss scale; an absolute 1e-4 before). Seeds 0-2: medium stopped after 43-48 epochs instead of 48-99 (training
    # -35 %), F1 0.862 +- 0.008 vs 0.865 +- 0.002 (within the seed spread), NC 13 both; small 0.948 both
    # (benchmarks/ABLATION.md)
    min_improvement: float = 0.02
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    checkpoint_every: int = 5
    snapshot_size: int = 5000
    tnf_dim: int = TNF_DIM

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


def training_threads(cores: int) -> int:
    """The torch threads training uses on ``cores`` cores: a quarter of them, at least one. Fixed by the core
    count alone because torch's results depend on its thread count: ``deepmetabin bin`` trains the same model
    whether the markers stage runs beside it or was reused (``--resume`` after a training option changed), and so
    does ``deepmetabin train``. The small network gains nothing from more (256-row batches on medium: 0.71 s per
    epoch on one thread, 0.75 s on two)."""
    return max(1, int(cores) // 4)


@dataclass
class EpochEvent:
    """What callbacks receive after every epoch.

    ``losses``: mean training loss terms (loss, rec, kl_z, kl_y, neighbour) and ``val_rec`` (the
    held-out reconstruction loss, NaN without a hold-out). ``latent``/``components``: a (<=5k, d)
    sample of latent means and its argmax q(y|x), for contigs ``sample_index`` (None if disabled, or
    when every callback has an attribute ``wants_latent = False``).
    """

    epoch: int
    epochs: int
    losses: dict[str, float]
    seconds: float
    device: str
    best_epoch: int
    stopped: bool = False
    latent: np.ndarray | None = None
    components: np.ndarray | None = None
    sample_index: np.ndarray | None = None


Callback = Callable[[EpochEvent], None]


def pick_device(device: str = "auto") -> torch.device:
    """CUDA when available (or asked for), else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunFolderError(f"--device {device}: no CUDA GPU is available here; use --device cpu or auto")
    return torch.device(device)


@dataclass
class Trained:
    """A fitted GMVAE with the sklearn-shaped API: ``transform``, ``predict_proba``, ``save``, ``load``."""

    model: GMVAE
    config: TrainConfig
    col_weights: np.ndarray
    history: pd.DataFrame
    best_epoch: int
    ids_hash: str = ""
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def _encode_all(self, x: np.ndarray, batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        self.model.eval()
        dev = next(self.model.parameters()).device
        mus, probs = [], []
        for s in range(0, len(x), batch):
            enc = self.model.encode(torch.as_tensor(x[s : s + batch], device=dev), tau=1.0)
            mus.append(enc["mu"].cpu().numpy())
            probs.append(enc["prob"].cpu().numpy())
        return np.concatenate(mus).astype(np.float32), np.concatenate(probs).astype(np.float32)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) features -> ((N, d) float32 latent means, (N, K) float32 q(y|x)) in one pass."""
        return self._encode_all(np.asarray(x, np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N, d) float32 latent means (z mean given the q(y|x) probabilities)."""
        return self._encode_all(np.asarray(x, np.float32))[0]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N, K) float32 q(y|x)."""
        return self._encode_all(np.asarray(x, np.float32))[1]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write torch state + config + contig-id hash atomically to ``path``."""
        buf = io.BytesIO()
        torch.save(
            {
                "state": {k: v.cpu() for k, v in self.model.state_dict().items()},
                "dim": self.model.dim, "config": asdict(self.config), "col_weights": self.col_weights,
                "history": self.history.to_dict(orient="list"), "best_epoch": self.best_epoch,
                "ids_hash": self.ids_hash, "extra": self.extra,
            },
            buf,
        )
        write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, ids_hash: str | None = None, device: str = "cpu") -> "Trained":
        """Load a saved model; with ``ids_hash``, refuse a model trained on other contigs.

        Raises:
            RunFolderError: missing/corrupt file, or the contig-id hash differs.
        """
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as exc:
            raise RunFolderError(f"{path}: cannot load the model ({exc}); train again with `deepmetabin train`") from None
        if ids_hash is not None and obj["ids_hash"] != ids_hash:
            raise RunFolderError(
                f"{path}: model was trained on other contigs (ids hash {obj['ids_hash']} != {ids_hash}); train again"
            )
        config = TrainConfig.from_dict(obj["config"])
        model = GMVAE(obj["dim"], config.latent, config.k, config.hidden)
        model.load_state_dict(obj["state"])
        model.to(pick_device(device)).eval()
        return cls(model, config, obj["col_weights"], pd.DataFrame(obj["history"]), obj["best_epoch"], obj["ids_hash"], str(device), obj.get("extra", {}))


class Adam:
    """Adam (Kingma & Ba; no weight decay, no AMSGrad), step for step the arithmetic of ``torch.optim.Adam``
    with its defaults (checked equal to it in the tests).

    Not ``torch.optim.Adam`` itself: torch's optimizers import ``torch._dynamo`` on first use, 2.4 s of
    CPU in the training stage of every run (the compiler is never used here).
    """

    FORMAT = "deepmetabin-adam-1"

    def __init__(self, params: Sequence[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        grads = [self.params[i].grad for i in live]
        m = [self.exp_avg[i] for i in live]
        v = [self.exp_avg_sq[i] for i in live]
        self.step_count += 1
        torch._foreach_lerp_(m, grads, 1 - self.beta1)
        torch._foreach_mul_(v, self.beta2)
        torch._foreach_addcmul_(v, grads, grads, 1 - self.beta2)
        bc1 = 1 - self.beta1 ** float(self.step_count)
        bc2_sqrt = (1 - self.beta2 ** float(self.step_count)) ** 0.5
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, m, denom, -(self.lr / bc1))

    def state_dict(self) -> dict[str, Any]:
        return {"format": self.FORMAT, "step": self.step_count, "exp_avg": [t.clone() for t in self.exp_avg],
                "exp_avg_sq": [t.clone() for t in self.exp_avg_sq]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != self.FORMAT or len(state["exp_avg"]) != len(self.params):
            raise ValueError("not a state of this optimizer")
        self.step_count = int(state["step"])
        for dst, src in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]):
            dst.copy_(src)


def _batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    """Split ``order`` into batches of ``size``; a trailing batch of one row joins the previous (BatchNorm needs 2)."""
    parts = [order[s : s + size] for s in range(0, len(order), size)]
    if len(parts) > 1 and len(parts[-1]) < 2:
        parts[-2] = np.concatenate([parts[-2], parts.pop()])
    return parts


def train(
    x: np.ndarray,
    graph: sp.spmatrix | None,
    config: TrainConfig | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    ids_hash: str = "",
    stop: Callable[[], bool] | None = None,
    restart_on_mismatch: bool = False,
) -> Trained:
    """Fit the GMVAE on (N, D) float32 features ``x`` with must-links from ``graph`` (N x N CSR of edge distances).

    Args:
        config: settings (defaults when None).
        callbacks: called with an :class:`EpochEvent` after every epoch.
        checkpoint: path of the checkpoint file, written atomically every ``config.checkpoint_every`` epochs.
        resume: continue from ``checkpoint`` if it exists (same config, features and graph required, else
            :class:`RunFolderError`; with ``restart_on_mismatch`` such a checkpoint is ignored instead).
        ids_hash: hash of the contig ids (stored in the model and checkpoint, checked on resume).
        stop: polled after every epoch; returning True ends training early (the app's stop button).
    """
    config = config or TrainConfig()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, dim = x.shape
    if n < 4:
        raise RunFolderError(f"only {n} contigs: too few to train the model (need at least 4)")
    device = pick_device(config.device)
    torch.set_num_threads(max(1, config.threads or len(os.sched_getaffinity(0))))
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    graph = sp.csr_matrix((n, n), dtype=np.float32) if graph is None else sp.csr_matrix(graph)
    nb_index, nb_weight, bandwidth = neighbour_table(x, graph, max_neighbours=config.max_neighbours, bandwidth=config.bandwidth)
    col_w = block_weights(x, config.tnf_dim, config.tnf_share)
    data_digest = _data_digest(x, nb_index, nb_weight)
    perm = rng.permutation(n)
    n_hold = int(round(config.holdout * n)) if n >= 50 else 0
    hold, train_idx = np.sort(perm[:n_hold]), perm[n_hold:]
    sample_index = np.sort(rng.choice(n, size=min(n, config.snapshot_size), replace=False)) if config.snapshot_size else None

    model = GMVAE(dim, config.latent, config.k, config.hidden).to(device)
    opt = Adam(list(model.parameters()), lr=config.lr)
    weights = LossWeights(config.tnf_share, config.kl_weight, config.neighbour_weight)
    xt = torch.as_tensor(x, device=device)
    col_wt = torch.as_tensor(col_w, device=device)
    nb_index_t = torch.as_tensor(nb_index, device=device)
    nb_weight_t = torch.as_tensor(nb_weight, device=device)

    history: list[dict[str, float]] = []
    start_epoch, best_val, best_epoch, bad = 0, float("inf"), -1, 0
    best_state: dict[str, torch.Tensor] | None = None
    ckpt = Path(checkpoint) if checkpoint else None
    state = torch.load(ckpt, map_location="cpu", weights_only=False) if resume and ckpt is not None and ckpt.exists() else None
    # (RNG states in a checkpoint must stay CPU tensors)
    if state is not None and (state["ids_hash"] != ids_hash or state["config"] != asdict(config)
                              or state.get("data_digest") != data_digest or state["opt"].get("format") != Adam.FORMAT):
        if not restart_on_mismatch:
            raise RunFolderError(f"{ckpt}: checkpoint was made with other contigs, features, graph or settings; "
                                 "run without --resume")
        log.info("%s: made with other contigs, features, graph or settings; training starts over", ckpt)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history, start_epoch = state["history"], state["epoch"]
        best_val, best_epoch, bad, best_state = state["best_val"], state["best_epoch"], state["bad"], state["best_state"]
        log.info("resumed from %s at epoch %d", ckpt, start_epoch)

    stopped = False
    # the latent snapshot costs an encoder pass over up to 5k rows per epoch: only for callbacks that read it
    wants_latent = any(getattr(cb, "wants_latent", True) for cb in callbacks or ())
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        tau = config.tau_start * (config.tau_end / config.tau_start) ** (epoch / max(1, config.epochs - 1))
        model.train()
        sums: dict[str, float] = {}
        order = rng.permutation(train_idx)
        for b in _batches(order, config.batch_size):
            bt = torch.as_tensor(b, device=device)
            nb, nb_w = nb_index_t[bt], nb_weight_t[bt]
            if config.neighbour_samples:
                nb, nb_w = sample_neighbours(nb, nb_w, config.neighbour_samples)
            terms = batch_loss(model, xt[bt], xt[nb], nb_w, col_wt, weights, tau)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(b)
        row = {k: v / len(order) for k, v in sums.items()}
        row["val_rec"] = _held_out_rec(model, xt, hold, col_wt) if n_hold else float("nan")
        row.update(epoch=epoch, tau=tau, seconds=time.perf_counter() - t0)
        history.append(row)
        if n_hold:
            if row["val_rec"] < best_val * (1 - config.min_improvement):
                best_val, best_epoch, bad = row["val_rec"], epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
            stopped = bad >= config.patience
        else:
            best_epoch = epoch
        stopped = stopped or bool(stop and stop())
        last = stopped or epoch == config.epochs - 1
        if ckpt is not None and ((epoch + 1) % config.checkpoint_every == 0 or last):
            _save_checkpoint(ckpt, model, opt, rng, history, epoch + 1, best_val, best_epoch, bad, best_state, config, ids_hash,
                             data_digest)
        if callbacks:
            event = EpochEvent(epoch, config.epochs, {k: row[k] for k in ("loss", "rec", "kl_z", "kl_y", "neighbour", "val_rec")},
                               row["seconds"], str(device), best_epoch, stopped)
            if sample_index is not None and wants_latent:
                with torch.no_grad():
                    model.eval()
                    enc = model.encode(xt[torch.as_tensor(sample_index, device=device)], tau=1.0)
                event.latent = enc["mu"].cpu().numpy()
                event.components = enc["prob"].argmax(-1).cpu().numpy()
                event.sample_index = sample_index
            for cb in callbacks:
                cb(event)
        if stopped:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return Trained(model, config, col_w, pd.DataFrame(history), best_epoch, ids_hash, str(device),
                   {"bandwidth": bandwidth, "n_holdout": int(n_hold)})


@torch.no_grad()
def _held_out_rec(model: GMVAE, xt: torch.Tensor, hold: np.ndarray, col_w: torch.Tensor) -> float:
    model.eval()
    xh = xt[torch.as_tensor(hold, device=xt.device)]
    enc = model.encode(xh, tau=1.0)
    return float((((xh - model.decode(enc["mu"])) ** 2) * col_w).sum(-1).mean())


def _data_digest(x: np.ndarray, nb_index: np.ndarray, nb_weight: np.ndarray) -> str:
    """What a checkpoint was trained on: the features and the neighbour table built from the graph."""
    h = hashlib.sha256()
    for a in (x, nb_index, nb_weight):
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


def _save_checkpoint(path: Path, model, opt, rng, history, epoch, best_val, best_epoch, bad, best_state, config, ids_hash,
                     data_digest) -> None:
    with atomic_path(path) as tmp:
        torch.save(
            {
                "model": model.state_dict(), "opt": opt.state_dict(), "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None, "history": history, "epoch": epoch, "best_val": best_val,
                "best_epoch": best_epoch, "bad": bad, "best_state": best_state, "config": asdict(config),
                "ids_hash": ids_hash, "data_digest": data_digest,
            },
            tmp,
        )
