"""The ``"stacked"`` engine (CUDA only, opt-in; :func:`aus_lib.schedule.run_folds` chooses it): all
folds of a cross-validation as one computation.

Their weights are stacked ``[K, ...]``; each LSTM layer runs as one cuDNN call over a
block-diagonal LSTM whose blocks are (fold, direction) pairs, batches have a fixed shape (padded
to the data set's longest clip, masked), and the optimizer step is elementwise over the stack,
so one Python step trains every fold with no host synchronisation inside an epoch. It equals
the per-fold computation (:mod:`aus_lib.fold`) up to float rounding (different matrix shapes),
within the tolerance the tests state.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from aus_lib import analysis
from aus_lib.fold import EpochHook, FoldResult, FoldRun, batch_order, epoch_noise, fold_seed, report_epoch
from aus_lib.model import DropoutNoise, Sequence1Modal, dropout_scale, lengths_to_mask, reverse_within_lengths

# Devices on which the folds are stacked into one computation; elsewhere they are interleaved.
STACKED_DEVICES = ("cuda",)
STACKED_EVAL_BATCH = 256    # clips per fold in one stacked validation batch (a GPU wants large ones)


class StackedModel:
    """K copies of :class:`~aus_lib.model.Sequence1Modal` (one per fold) as one computation.

    Every parameter is stacked ``[K, *shape]``. An LSTM layer is one ``torch.lstm`` call over
    M = K x directions blocks: the block-diagonal weights keep the blocks independent, and the
    reverse blocks read their clip reversed within its length (as the masked model does), so
    each block computes exactly that fold's direction, in one kernel for all of them.
    """

    def __init__(self, models: Sequence[Sequence1Modal]) -> None:
        self.template = models[0]
        self.cfg = models[0].cfg
        self.n_folds = len(models)
        names = [name for name, _ in models[0].named_parameters()]
        per_model = [dict(model.named_parameters()) for model in models]
        self.params = {name: torch.stack([p[name].detach() for p in per_model]).requires_grad_()
                       for name in names}
        self.directions = ("", "_reverse") if self.cfg.bidirectional else ("",)
        blocks = self.n_folds * len(self.directions)
        self._eye = torch.eye(blocks, device=self.params[names[0]].device)

    def write_back(self, models: Sequence[Sequence1Modal]) -> None:
        """Copy fold k's slice of every parameter into ``models[k]``."""
        with torch.no_grad():
            for k, model in enumerate(models):
                for name, p in model.named_parameters():
                    p.copy_(self.params[name][k])

    def _block_diagonal(self, name: str, layer: int) -> torch.Tensor:
        """``name`` (weight_ih / weight_hh) of ``layer`` for all blocks: [4 M H, M in]."""
        hidden = self.cfg.encoder_dim
        w = torch.stack([self.params[f"encoder.{name}_l{layer}{d}"] for d in self.directions], dim=1)
        blocks = w.size(0) * w.size(1)
        w = w.reshape(blocks, 4, hidden, w.size(-1))
        # gate g, unit j of block m reads only block m's inputs: the layout nn.LSTM expects for
        # hidden size M * H with the gates [i, f, g, o] outermost.
        return torch.einsum("mghf,mn->gmhnf", w, self._eye).reshape(4 * blocks * hidden, blocks * w.size(-1))

    def _bias(self, name: str, layer: int) -> torch.Tensor:
        hidden = self.cfg.encoder_dim
        b = torch.stack([self.params[f"encoder.{name}_l{layer}{d}"] for d in self.directions], dim=1)
        return b.reshape(-1, 4, hidden).transpose(0, 1).reshape(-1)

    def _lstm_layer(self, h: torch.Tensor, flat_lengths: torch.Tensor, layer: int, train: bool) -> torch.Tensor:
        """One bidirectional LSTM layer for every fold: h[K, B, T, F] -> [K, B, T, D H] (junk on padding)."""
        k, b, t, f = h.shape
        inputs = [h]
        if len(self.directions) == 2:
            inputs.append(reverse_within_lengths(h.reshape(k * b, t, f), flat_lengths).view(k, b, t, f))
        blocks = k * len(inputs)
        x = torch.stack(inputs, dim=1).permute(2, 3, 0, 1, 4).reshape(b, t, blocks * f)
        weights = [self._block_diagonal("weight_ih", layer), self._block_diagonal("weight_hh", layer),
                   self._bias("bias_ih", layer), self._bias("bias_hh", layer)]
        zeros = h.new_zeros(1, b, blocks * self.cfg.encoder_dim)
        out, _, _ = torch.lstm(x, (zeros, zeros), weights, True, 1, 0.0, train, False, True)
        out = out.view(b, t, k, len(inputs), self.cfg.encoder_dim).permute(2, 3, 0, 1, 4)
        parts = [out[:, 0]]
        if len(inputs) == 2:
            hidden = self.cfg.encoder_dim
            parts.append(reverse_within_lengths(out[:, 1].reshape(k * b, t, hidden), flat_lengths)
                         .view(k, b, t, hidden))
        return torch.cat(parts, dim=3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, train: bool,
                scales: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """x[K, B, T, F], lengths[K, B] -> (logits[K, B, C], attention[K, B, T]).

        ``scales``: in training, one dropout factor per dropout site of the model, in the order
        the model applies them (see :meth:`dropout_sites`), each shaped like its input.
        """
        k, b, t, _ = x.shape
        flat_lengths = lengths.reshape(k * b)
        mask = lengths_to_mask(flat_lengths, t).view(k, b, t)
        keep = mask.unsqueeze(3)
        scales = iter(scales)
        h = x
        for layer in range(self.cfg.encoder_layers):
            if layer > 0 and train and self.template.encoder.dropout > 0:
                h = h * next(scales)
            h = self._lstm_layer(h, flat_lengths, layer, train).masked_fill(~keep, 0.0)
        features = h
        if self.cfg.attention_context:
            weights = keep.to(h.dtype)
            mean = (h * weights).sum(2) / weights.sum(2)
            features = torch.cat([h, mean.unsqueeze(2).expand_as(h)], dim=3)
        for i, block in enumerate(self.template.attention.scorer):
            if isinstance(block, torch.nn.Linear):
                weight, bias = self.params[f"attention.scorer.{i}.weight"], self.params[f"attention.scorer.{i}.bias"]
                features = torch.einsum("kbti,koi->kbto", features, weight) + bias[:, None, None, :]
            elif isinstance(block, torch.nn.Dropout):
                if train and block.p > 0:
                    features = features * next(scales)
            else:
                features = block(features)
        scores = features.squeeze(3).masked_fill(~mask, float("-inf"))
        attention = torch.softmax(scores, dim=2)
        representation = (attention.unsqueeze(3) * h.masked_fill(~keep, 0.0)).sum(2)
        logits = torch.einsum("kbh,kch->kbc", representation, self.params["classifier.weight"])
        return logits + self.params["classifier.bias"][:, None, :], attention

    def dropout_sites(self) -> list[tuple[float, int]]:
        """(p, features) of every dropout the model applies in training, in order."""
        return self.template.dropout_sites()



def stacked_scales(sites: Sequence[tuple[float, int]], noises: Sequence[DropoutNoise | None],
                   rows: Sequence[int], batch: int, frames: int, device: torch.device) -> list[torch.Tensor]:
    """Every dropout factor of one stacked step: fold k draws its own rows from its own generator,
    as :func:`aus_lib.model.dropout` does when the fold trains alone; rows beyond are 1."""
    scales = []
    for p, features in sites:
        scale = torch.ones(len(rows), batch, frames, features, device=device)
        for k, (noise, n) in enumerate(zip(noises, rows)):
            if n:
                scale[k, :n] = dropout_scale(n, frames, (features,), p, noise, device)
        scales.append(scale)
    return scales



class StackedAdam:
    """``torch.optim.Adam`` (L2 weight decay, no amsgrad) for each fold of stacked parameters, with a
    per-fold step count, so a fold that sits out a step (no batch left, or stopped) is left as it was."""

    def __init__(self, params: dict[str, torch.Tensor], runs: Sequence[FoldRun]) -> None:
        group = runs[0].optimizer.param_groups[0]
        self.lr, (self.beta1, self.beta2) = group["lr"], group["betas"]
        self.eps, self.weight_decay = group["eps"], group["weight_decay"]
        self.params = params
        self.exp_avg, self.exp_avg_sq = {}, {}
        steps = []
        for run in runs:
            state = [run.optimizer.state.get(p, {}) for p in run.model.parameters()]
            steps.append(int(state[0]["step"]) if state[0] else 0)
        self.steps = np.array(steps, dtype=np.int64)  # host copy: bias corrections need no device sync
        for i, name in enumerate(params):
            avg, avg_sq = [], []
            for run in runs:
                p = list(run.model.parameters())[i]
                state = run.optimizer.state.get(p)
                avg.append(state["exp_avg"] if state else torch.zeros_like(p))
                avg_sq.append(state["exp_avg_sq"] if state else torch.zeros_like(p))
            self.exp_avg[name] = torch.stack(avg).detach().clone()
            self.exp_avg_sq[name] = torch.stack(avg_sq).detach().clone()

    def plan(self, active: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The bias-corrected scalars of an epoch's steps, where ``active`` [steps, K] says which folds
        take each step: (step size, sqrt of the second correction), [steps, K] on the device.

        Computed on the host, as ``torch.optim.Adam`` does (double precision, used as float32),
        and uploaded once, so the steps themselves need no host round trip.
        """
        counts = self.steps + np.cumsum(active, axis=0)
        self.steps = counts[-1].copy()
        counts = np.maximum(counts, 1).astype(np.float64)
        step_size = torch.tensor(self.lr / (1 - self.beta1 ** counts), dtype=torch.float32)
        correction2 = torch.tensor(np.sqrt(1 - self.beta2 ** counts), dtype=torch.float32)
        return step_size.to(device), correction2.to(device)

    @torch.no_grad()
    def step(self, active: torch.Tensor, step_size: torch.Tensor, correction2: torch.Tensor) -> None:
        """One Adam step for the folds where ``active`` [K] is True, with one row of :meth:`plan`."""
        for name, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            grad = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
            avg = self.exp_avg[name].lerp(grad, 1 - self.beta1)
            avg_sq = self.exp_avg_sq[name].mul(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            denom = (avg_sq.sqrt() / correction2.view(shape)).add_(self.eps)
            new = p - step_size.view(shape) * (avg / denom)
            on = active.view(shape)
            p.copy_(torch.where(on, new, p))
            self.exp_avg[name] = torch.where(on, avg, self.exp_avg[name])
            self.exp_avg_sq[name] = torch.where(on, avg_sq, self.exp_avg_sq[name])

    def write_back(self, runs: Sequence[FoldRun]) -> None:
        """Give each fold's ``torch.optim.Adam`` its slice of the state, as if it had taken the steps."""
        for k, run in enumerate(runs):
            if self.steps[k] == 0:
                continue
            for name, p in zip(self.params, run.model.parameters()):
                run.optimizer.state[p] = {"step": torch.tensor(float(self.steps[k])),
                                          "exp_avg": self.exp_avg[name][k].clone(),
                                          "exp_avg_sq": self.exp_avg_sq[name][k].clone()}



def clip_stacked_grad_norm(params: dict[str, torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` for each fold of stacked parameters: fold k's norm over its own gradients."""
    grads = [p.grad for p in params.values()]
    folds = grads[0].size(0)
    norms = torch.stack([g.reshape(folds, -1).norm(dim=1) for g in grads]).norm(dim=0)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view((-1,) + (1,) * (g.dim() - 1)))



def _epoch_plan(runs: Sequence[FoldRun], batch: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Each live fold's order for its next epoch, and per step the clips [steps, K, batch] (0 where
    a fold has no clip) and how many of them are real [steps, K]."""
    orders = [batch_order(run.split.train, fold_seed(run.cfg.seed, run.k, run.next_epoch)) if not run.done
              else np.zeros(0, dtype=np.int64) for run in runs]
    steps = max(math.ceil(len(order) / batch) for order in orders)
    index = np.zeros((steps, len(runs), batch), dtype=np.int64)
    rows = np.zeros((steps, len(runs)), dtype=np.int64)
    for k, order in enumerate(orders):
        for s in range(math.ceil(len(order) / batch)):
            part = order[s * batch:(s + 1) * batch]
            index[s, k, :len(part)] = part
            rows[s, k] = len(part)
    return orders, index, rows



@torch.no_grad()
def _evaluate_stacked(model: StackedModel, features: torch.Tensor, runs: Sequence[FoldRun],
                      class_weights: torch.Tensor) -> list[dict]:
    """Validation metrics (with the weighted loss) of every fold, as :func:`aus_lib.fold.evaluate`."""
    device = features.device
    folds = len(runs)
    size = max(len(run.split.val) for run in runs)
    index = np.zeros((folds, size), dtype=np.int64)
    valid = np.zeros((folds, size), dtype=bool)
    for k, run in enumerate(runs):
        index[k, :len(run.split.val)] = run.split.val
        valid[k, :len(run.split.val)] = True
    index_d, valid_d = torch.from_numpy(index).to(device), torch.from_numpy(valid).to(device)
    lengths_all, labels_all = runs[0].tensors.lengths, runs[0].tensors.labels
    fold_index = torch.arange(folds, device=device).unsqueeze(1)
    preds, loss_sum, weight_sum = [], torch.zeros(folds, device=device), torch.zeros(folds, device=device)
    for start in range(0, size, STACKED_EVAL_BATCH):
        idx, ok = index_d[:, start:start + STACKED_EVAL_BATCH], valid_d[:, start:start + STACKED_EVAL_BATCH]
        logits, _ = model.forward(features[fold_index, idx], lengths_all[idx], train=False)
        y = labels_all[idx]
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
        w = class_weights.gather(1, y) * ok
        loss_sum += (ce * w).sum(1)
        weight_sum += w.sum(1)
        preds.append(logits.argmax(2))
    predicted = torch.cat(preds, dim=1).cpu().numpy()
    losses = (loss_sum / weight_sum).cpu().numpy()
    results = []
    for k, run in enumerate(runs):
        y_true = run.data.labels[index[k, valid[k]]]
        metrics = analysis.classification_metrics(y_true, predicted[k, valid[k]])
        metrics["loss"] = float(losses[k])
        results.append(metrics)
    return results



def train_stacked(runs: Sequence[FoldRun], *, bar: tqdm | None = None,
                  on_epoch_end: EpochHook | None = None) -> list[FoldResult]:
    """Train ``runs`` (on one device) to the end as one stacked computation (see :class:`StackedModel`),
    then finish them; results in the order of ``runs``.

    Each epoch trains every live fold's next epoch with its own batches and dropout generator;
    the batches are padded to the data set's longest clip and a fold with fewer batches sits
    the last steps out. Then every fold is validated, gets its weights and optimizer state
    back, and records its epoch (early stopping, ``state.pt``) as when it trains alone.
    """
    cfg = runs[0].cfg
    device = runs[0].device
    model = StackedModel([run.model for run in runs])
    optimizer = StackedAdam(model.params, runs)
    features = torch.stack([run.tensors.features for run in runs])  # [K, N, T, F], each fold's scaling
    lengths_all, labels_all = runs[0].tensors.lengths, runs[0].tensors.labels
    class_weights = torch.stack([run.weights for run in runs])      # [K, C]
    frames = features.size(2)
    sites = model.dropout_sites()
    fold_index = torch.arange(len(runs), device=device).unsqueeze(1)
    while not all(run.done for run in runs):
        started = time.perf_counter()
        live = [not run.done for run in runs]
        orders, index, rows = _epoch_plan(runs, cfg.batch_size)
        # Everything the steps need from the host, uploaded once per epoch.
        index_d = torch.from_numpy(index).to(device)
        active_d = torch.from_numpy(rows > 0).to(device)
        real_d = torch.from_numpy(np.arange(cfg.batch_size) < rows[:, :, None]).to(device)
        step_sizes, corrections2 = optimizer.plan(rows > 0, device)
        noises = [epoch_noise(fold_seed(cfg.seed, run.k, run.next_epoch), device, frames) if alive else None
                  for run, alive in zip(runs, live)]
        sums = torch.zeros(len(runs), 3, device=device)  # weighted loss, weight, correct
        for s in range(index.shape[0]):
            idx, real = index_d[s], real_d[s]
            x, lengths, y = features[fold_index, idx], lengths_all[idx], labels_all[idx]
            scales = stacked_scales(sites, noises, rows[s].tolist(), cfg.batch_size, frames, device)
            logits, _ = model.forward(x, lengths, train=True, scales=scales)
            ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
            w = class_weights.gather(1, y) * real
            loss_sum, weight_sum = (ce * w).sum(1), w.sum(1)
            loss = torch.where(active_d[s], loss_sum / weight_sum.clamp_min(1e-30), 0.0).sum()
            for p in model.params.values():
                p.grad = None
            loss.backward()
            clip_stacked_grad_norm(model.params, cfg.clip_norm)
            optimizer.step(active_d[s], step_sizes[s], corrections2[s])
            correct = ((logits.argmax(2) == y) & real).sum(1)
            sums += torch.stack([loss_sum.detach(), weight_sum, correct.to(sums.dtype)], dim=1)
        val = _evaluate_stacked(model, features, runs, class_weights)
        totals = sums.cpu().numpy()
        model.write_back([run.model for run in runs])
        optimizer.write_back(runs)
        seconds = time.perf_counter() - started
        for k, run in enumerate(runs):
            if not live[k]:
                continue
            loss, weight, correct = totals[k]
            row = run.record(float(loss / weight), float(correct / len(orders[k])), val[k], seconds)
            report_epoch(bar, run, row)
            if on_epoch_end is not None:
                on_epoch_end(run.k, row["epoch"], row)
    return [run.finish() for run in runs]
