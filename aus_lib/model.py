"""The network: a (Bi)LSTM over a clip's AU frames, self-attention pooling, a linear classifier.

This is the original sequenceLearning ``Sequence1Modal``. Two encoder paths share one set of
parameters (the state_dict of a plain ``nn.LSTM``), so a checkpoint loads into either:

* ``packed=True`` (default): ``pack_padded_sequence`` over the variable-length clips;
* ``packed=False``: fixed-shape LSTM calls over the padded batch (no host round trip for the
  lengths, friendlier to GPUs and ``torch.compile``). Each backward direction runs over the
  clip reversed *within its own length*, so it starts at the clip's last real frame rather than
  in the padding; real frames get the same outputs as the packed path.

Both paths run the encoder one layer at a time and apply the inter-layer dropout to the padded
``[batch, frames, features]`` tensor, so in training they draw the same dropout masks too and
differ only by float rounding. With a :class:`DropoutNoise` the masks come from its generator,
drawn at a fixed padded length, so a clip gets the same masks whatever the batch is cut to and
whichever thread trains it. :class:`BatchMasks` draws a whole mini-batch's masks at once and hands
them out in chunks, so a batch trained in chunks (``micro_batch``) gets the masks it gets whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

ACTIVATIONS = ("tanh", "relu")


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`Sequence1Modal` (defaults: the paper's model)."""

    input_size: int = 35
    n_classes: int = 8
    encoder_dim: int = 50
    encoder_layers: int = 2
    encoder_dropout: float = 0.3
    bidirectional: bool = True
    attention_layers: int = 2
    attention_dropout: float = 0.3
    attention_activation: str = "tanh"
    attention_context: bool = False
    # Concatenate each clip's per-AU mean and standard deviation over its frames to the pooled
    # representation: the statistics a static classifier sees, next to what the LSTM adds.
    attention_input_stats: bool = False

    def __post_init__(self) -> None:
        for name in ("input_size", "n_classes", "encoder_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        for name in ("encoder_layers", "attention_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("encoder_dropout", "attention_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"ModelConfig.{name} must be a number in [0, 1), got {value!r}")
        if self.attention_activation not in ACTIVATIONS:
            raise ValueError(
                f"ModelConfig.attention_activation must be one of {ACTIVATIONS}, "
                f"got {self.attention_activation!r}"
            )

    @property
    def hidden_size(self) -> int:
        """Size of one frame's encoder output (both directions concatenated)."""
        return self.encoder_dim * (2 if self.bidirectional else 1)


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """BoolTensor[B, max_len], True on each clip's real frames (the first ``lengths[b]``)."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


def reversal_index(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """LongTensor[B * frames]: for each row of x[B, frames, F] viewed as [B * frames, F], the row it
    takes when each clip's first ``lengths[b]`` frames are reversed (padding maps to itself).
    A permutation that is its own inverse."""
    steps = torch.arange(frames, device=lengths.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    within = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return (within + frames * torch.arange(len(lengths), device=lengths.device).unsqueeze(1)).reshape(-1)


class _Reverse(torch.autograd.Function):
    """Rows of x[B, T, F] permuted by a self-inverse row index (:func:`reversal_index`).

    Whole rows are copied (``index_select``: about 3x faster than ``gather`` with a per-element
    index), and the gradient is permuted by the same index rather than scatter-added (each row
    receives exactly one gradient, so the values are the same).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        return x.reshape(-1, x.size(2)).index_select(0, index).view(x.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        return grad.reshape(-1, grad.size(2)).index_select(0, index).view(grad.shape), None


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor | None = None, *,
                           index: torch.Tensor | None = None) -> torch.Tensor:
    """Reverse each clip's first ``lengths[b]`` frames of x[B, T, F]; padding stays in place.

    Applying it twice gives x back. ``index`` (from :func:`reversal_index`) may be passed instead
    of ``lengths`` so that a model reversing several tensors of one batch builds it once.
    """
    if index is None:
        index = reversal_index(lengths.to(x.device), x.size(1))
    return _Reverse.apply(x, index)


@dataclass
class DropoutNoise:
    """Where training-time dropout masks come from: ``generator``, drawn at ``frames`` padded frames.

    A mask is drawn for ``[batch, frames, ...]`` and cut to the batch's frames, so a clip's masks
    do not depend on how far its batch is padded. ``generator`` must live on the data's device.
    """

    generator: torch.Generator
    frames: int

    def keep(self, rows: int, frames: int, features: tuple[int, ...], p: float,
             device: torch.device) -> torch.Tensor:
        """A fresh BoolTensor[rows, frames, *features]: True where dropout keeps the value.

        Uniform draws (faster than ``bernoulli_`` on the CPU) at ``self.frames``, cut to ``frames``.
        """
        if frames > self.frames:
            raise ValueError(f"DropoutNoise.frames={self.frames} is shorter than the batch ({frames} frames); "
                             "draw the noise at the data set's padded length.")
        draws = torch.rand((rows, self.frames, *features), generator=self.generator, device=device)
        return draws[:, :frames].ge(p)

    def scale(self, rows: int, frames: int, features: tuple[int, ...], p: float,
              device: torch.device) -> torch.Tensor:
        """The next mask as the factor inverted dropout multiplies by (see :func:`keep_to_scale`)."""
        return keep_to_scale(self.keep(rows, frames, features, p, device), p)


def keep_to_scale(keep: torch.Tensor, p: float) -> torch.Tensor:
    """A keep mask as inverted dropout's float32 factor: 0 or 1 / (1 - p)."""
    # Scaled in place: a third less time than an out-of-place multiply (torch.where with scalars: twice as long).
    return keep.to(torch.float32).mul_(1.0 / (1.0 - p))


def dropout_scale(rows: int, frames: int, features: tuple[int, ...], p: float, noise: DropoutNoise,
                  device: torch.device) -> torch.Tensor:
    """The factor[rows, frames, *features] inverted dropout multiplies by, drawn now from ``noise``."""
    return noise.scale(rows, frames, features, p, device)


class BatchMasks:
    """Every dropout mask of one mini-batch, drawn at once, handed out chunk by chunk.

    The masks are drawn as the whole batch's forward pass draws them from ``noise`` (site by site,
    all rows, in the model's order: :meth:`Sequence1Modal.dropout_sites`), so a batch trained in
    chunks of clips (gradients summed, one optimizer step) gets exactly the masks it gets whole.
    Kept as booleans, a quarter of the float factors' memory.
    """

    def __init__(self, noise: DropoutNoise, sites: list[tuple[float, int]], rows: int, frames: int,
                 device: torch.device) -> None:
        self.sites = sites
        self.keeps = [noise.keep(rows, frames, (features,), p, device) for p, features in sites]

    def chunk(self, start: int, stop: int) -> ChunkMasks:
        """The masks of rows ``start:stop`` of the batch, for one forward pass over those clips."""
        return ChunkMasks(self, start, stop)


class ChunkMasks:
    """One chunk's view of :class:`BatchMasks`: each call of :meth:`scale` returns the next site's mask."""

    def __init__(self, masks: BatchMasks, start: int, stop: int) -> None:
        self.masks, self.start, self.stop, self.next_site = masks, start, stop, 0

    def scale(self, rows: int, frames: int, features: tuple[int, ...], p: float,
              device: torch.device) -> torch.Tensor:
        site = self.next_site
        if site >= len(self.masks.sites) or self.masks.sites[site] != (p, features[-1]) or len(features) != 1:
            raise ValueError(f"Dropout site {site} (p={p}, features={features}) is not the model's site "
                             f"{site} of {self.masks.sites}: draw BatchMasks with this model's dropout_sites().")
        keep = self.masks.keeps[site]
        if rows != self.stop - self.start or frames > keep.size(1):
            raise ValueError(f"A chunk of rows {self.start}:{self.stop} got a tensor of {rows} clips x {frames} "
                             f"frames; the batch's masks are {tuple(keep.shape[:2])}.")
        self.next_site += 1
        return keep_to_scale(keep[self.start:self.stop, :frames], p)


Masks = DropoutNoise | ChunkMasks


def dropout(x: torch.Tensor, p: float, training: bool, noise: Masks | None = None) -> torch.Tensor:
    """Inverted dropout of x[B, T, ...]: ``F.dropout`` (global RNG) without ``noise``, else masks from it."""
    if not training or p == 0:
        return x
    if noise is None:
        return F.dropout(x, p, True)
    return x * noise.scale(x.size(0), x.size(1), tuple(x.shape[2:]), p, x.device).to(x.dtype)


def _is_compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling and is_compiling())


def _lstm(x: torch.Tensor, zeros: torch.Tensor, params: list[torch.Tensor], train: bool) -> torch.Tensor:
    """A one-layer unidirectional LSTM over x[B, T, F] from a zero state: its output [B, T, H]."""
    # The functional op behind nn.LSTM: (input, hx, params, has_biases, num_layers,
    # dropout, train, bidirectional, batch_first) -> (output, h_n, c_n).
    out, _, _ = torch.lstm(x, (zeros, zeros), params, True, 1, 0.0, train, False, True)
    return out


def _check_inputs(x: torch.Tensor, lengths: torch.Tensor, input_size: int) -> None:
    if x.dim() != 3 or x.size(2) != input_size:
        raise ValueError(f"x must be [batch, frames, {input_size}], got shape {tuple(x.shape)}")
    if lengths.shape != (x.size(0),):
        raise ValueError(
            f"lengths must be [batch] = [{x.size(0)}] to match x, got shape {tuple(lengths.shape)}"
        )
    # Value checks read the tensor, so only do them where that costs no device sync or graph break.
    if lengths.device.type == "cpu" and not _is_compiling():
        if lengths.numel() and (lengths.min() < 1 or lengths.max() > x.size(1)):
            raise ValueError(
                f"lengths must lie in [1, {x.size(1)}] (the padded number of frames), "
                f"got min {int(lengths.min())} max {int(lengths.max())}"
            )


def input_statistics(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip mean and standard deviation of x[B, T, F] over the real frames (mask[B, T])."""
    weights = mask.unsqueeze(2).to(x.dtype)
    count = weights.sum(1).clamp_min(1.0)
    x = x.masked_fill(~mask.unsqueeze(2), 0.0)
    mean = (x * weights).sum(1) / count
    var = (((x - mean.unsqueeze(1)) * weights) ** 2).sum(1) / count
    return mean, torch.sqrt(var + 1e-6)


class SelfAttentionPooling(nn.Module):
    """Scores every frame with a small MLP, softmaxes over the real frames, sums the frames.

    With ``context=True`` the mean of the clip's real frames is concatenated to each frame
    before scoring, so a frame is judged relative to its clip.
    """

    def __init__(self, hidden: int, layers: int = 2, dropout: float = 0.3,
                 activation: str = "tanh", context: bool = False) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.context = context
        act = nn.Tanh if activation == "tanh" else nn.ReLU
        blocks: list[nn.Module] = []
        size_in = 2 * hidden if context else hidden
        for _ in range(layers - 1):
            blocks += [nn.Linear(size_in, hidden), act(), nn.Dropout(dropout)]
            size_in = hidden
        blocks += [nn.Linear(size_in, 1), act(), nn.Dropout(dropout)]
        self.scorer = nn.Sequential(*blocks)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor,
                noise: Masks | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """frames[B, T, H], mask[B, T] (True = real) -> (representation[B, H], weights[B, T])."""
        features = frames
        if self.context:
            weights = mask.unsqueeze(2).to(frames.dtype)
            mean = (frames * weights).sum(1) / weights.sum(1)
            features = torch.cat([frames, mean.unsqueeze(1).expand_as(frames)], dim=2)
        for block in self.scorer:
            is_dropout = isinstance(block, nn.Dropout)
            features = dropout(features, block.p, self.training, noise) if is_dropout else block(features)
        scores = features.squeeze(2)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        # masked_fill again so a padded frame that holds inf/nan cannot leak in as 0 * inf.
        representation = (weights.unsqueeze(2) * frames.masked_fill(~mask.unsqueeze(2), 0.0)).sum(1)
        return representation, weights


class Sequence1Modal(nn.Module):
    """(Bi)LSTM encoder + self-attention pooling + linear classifier over one modality."""

    def __init__(self, cfg: ModelConfig, packed: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.packed = packed
        self.encoder = nn.LSTM(
            input_size=cfg.input_size,
            hidden_size=cfg.encoder_dim,
            num_layers=cfg.encoder_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            # nn.LSTM only drops out between layers and warns when there is none.
            dropout=cfg.encoder_dropout if cfg.encoder_layers > 1 else 0.0,
        )
        self.attention = SelfAttentionPooling(
            cfg.hidden_size, cfg.attention_layers, cfg.attention_dropout,
            cfg.attention_activation, cfg.attention_context,
        )
        stats_size = 2 * cfg.input_size if cfg.attention_input_stats else 0
        self.classifier = nn.Linear(cfg.hidden_size + stats_size, cfg.n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                noise: Masks | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x[B, T, input_size] (right-padded), lengths[B] -> (logits[B, C], attention[B, T]).

        ``noise`` only matters in training mode: where the dropout masks come from.
        """
        if self.packed:
            lengths = lengths.to("cpu", torch.int64)  # packing wants the lengths on the host
        _check_inputs(x, lengths, self.cfg.input_size)
        mask = lengths_to_mask(lengths.to(x.device), x.size(1))
        if self.packed:
            frames = self._encode_packed(x, lengths, noise)
        else:
            frames = self._encode_masked(x, lengths, mask, noise)
        representation, attention = self.attention(frames, mask, noise)
        if self.cfg.attention_input_stats:
            representation = torch.cat([representation, *input_statistics(x, mask)], dim=1)
        return self.classifier(representation), attention

    def dropout_sites(self) -> list[tuple[float, int]]:
        """(p, features) of every dropout a training forward pass applies, in the order it applies them."""
        sites = []
        if self.encoder.dropout > 0:
            sites += [(self.encoder.dropout, self.cfg.hidden_size)] * (self.cfg.encoder_layers - 1)
        scorer = list(self.attention.scorer)
        for i, block in enumerate(scorer):
            if isinstance(block, nn.Dropout) and block.p > 0:
                linear = next(m for m in reversed(scorer[:i]) if isinstance(m, nn.Linear))
                sites.append((block.p, linear.out_features))
        return sites

    def _layer_params(self, layer: int) -> list[torch.Tensor]:
        """``self.encoder``'s weights of one layer, both directions, in ``torch.lstm``'s order."""
        directions = ("", "_reverse") if self.cfg.bidirectional else ("",)
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return [getattr(self.encoder, f"{name}_l{layer}{suffix}") for suffix in directions for name in names]

    def _encode_packed(self, x: torch.Tensor, lengths: torch.Tensor, noise: Masks | None) -> torch.Tensor:
        """One packed LSTM call per layer; dropout between layers on the padded tensor, as the masked path."""
        directions = 2 if self.cfg.bidirectional else 1
        zeros = x.new_zeros(directions, x.size(0), self.cfg.encoder_dim)
        h = x
        for layer in range(self.cfg.encoder_layers):
            if layer > 0:
                h = dropout(h, self.encoder.dropout, self.training, noise)
            packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            # The functional op behind nn.LSTM on packed input: (data, batch_sizes, hx, params,
            # has_biases, num_layers, dropout, train, bidirectional) -> (data, h_n, c_n).
            out, _, _ = torch.lstm(packed.data, packed.batch_sizes, (zeros, zeros), self._layer_params(layer),
                                   True, 1, 0.0, self.training, self.cfg.bidirectional)
            packed_out = PackedSequence(out, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
            h, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.size(1))
        return h

    def _encode_masked(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor,
                       noise: Masks | None) -> torch.Tensor:
        """Same result as the packed path on real frames, zeros on padded ones (as packing gives)."""
        keep = mask.unsqueeze(2)
        directions = ("", "_reverse") if self.cfg.bidirectional else ("",)
        index = reversal_index(lengths.to(x.device), x.size(1)) if self.cfg.bidirectional else None
        h = x
        for layer in range(self.cfg.encoder_layers):
            if layer > 0:
                h = dropout(h, self.encoder.dropout, self.training, noise)
            outputs = []
            for suffix in directions:
                inp = reverse_within_lengths(h, index=index) if suffix else h
                out = self._run_direction(inp, layer, suffix)
                outputs.append(reverse_within_lengths(out, index=index) if suffix else out)
            # A forward LSTM on right-padded input is exact on real frames; padded ones are junk. In place: cat's
            # output is new and its backward does not need it.
            h = torch.cat(outputs, dim=2).masked_fill_(~keep, 0.0)
        return h

    def _run_direction(self, x: torch.Tensor, layer: int, suffix: str) -> torch.Tensor:
        """One layer, one direction of ``self.encoder`` as a unidirectional LSTM over x[B, T, F]."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        params = [getattr(self.encoder, f"{name}_l{layer}{suffix}") for name in names]
        zeros = x.new_zeros(1, x.size(0), self.cfg.encoder_dim)
        # Kept out of torch.compile graphs: AOT autograd fails on a traced torch.lstm (torch 2.13),
        # and the fused LSTM kernel it would run eagerly is already the fast part. Wrapped only
        # while compiling: torch.compiler.disable imports torch._dynamo (about 70 MB of memory).
        run = torch.compiler.disable(_lstm) if _is_compiling() else _lstm
        return run(x, zeros, params, self.training)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
