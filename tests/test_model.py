"""Tests for aus_lib.model: shapes, masking, the two encoder paths, checkpoints, learning."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aus_lib.model import (
    DropoutNoise,
    ModelConfig,
    SelfAttentionPooling,
    Sequence1Modal,
    count_parameters,
    lengths_to_mask,
    reverse_within_lengths,
)



SMALL = dict(encoder_dim=8, attention_dropout=0.0, encoder_dropout=0.0)


def batch(b: int = 5, t: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random right-padded clips, lengths in [1, t] with at least one full-length clip."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t
    x = torch.randn(b, t, 35, generator=g)
    x = x.masked_fill(~lengths_to_mask(lengths, t).unsqueeze(2), 0.0)
    return x, lengths


def model(packed: bool = True, seed: int = 0, **cfg) -> Sequence1Modal:
    torch.manual_seed(seed)
    return Sequence1Modal(ModelConfig(**{**SMALL, **cfg}), packed=packed).eval()


def test_lengths_to_mask():
    mask = lengths_to_mask(torch.tensor([1, 3]), 4)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True, False, False, False], [True, True, True, False]]


def test_reverse_within_lengths_keeps_padding_in_place():
    x = torch.arange(8.0).view(2, 4, 1)
    out = reverse_within_lengths(x, torch.tensor([4, 2]))
    assert out.squeeze(2).tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]


@pytest.mark.parametrize("packed", [True, False])
def test_output_shapes(packed):
    x, lengths = batch(b=5, t=12)
    logits, attention = model(packed)(x, lengths)
    assert logits.shape == (5, 8)
    assert attention.shape == (5, 12)


def test_default_config_is_the_paper_model():
    net = Sequence1Modal(ModelConfig())
    assert net.encoder.hidden_size == 50 and net.encoder.num_layers == 2 and net.encoder.bidirectional
    assert net.classifier.in_features == 100 and net.classifier.out_features == 8
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("packed", [True, False])
def test_attention_is_zero_on_padding_and_sums_to_one(packed):
    x, lengths = batch()
    _, attention = model(packed)(x, lengths)
    padded = ~lengths_to_mask(lengths, x.size(1))
    assert torch.all(attention[padded] == 0)
    torch.testing.assert_close(attention.sum(1), torch.ones(len(lengths)))


@pytest.mark.parametrize("packed", [True, False])
def test_padded_values_do_not_matter(packed):
    x, lengths = batch()
    net = model(packed)
    noisy = x.clone()
    padded = ~lengths_to_mask(lengths, x.size(1))
    noisy[padded] = torch.randn(int(padded.sum()), 35) * 100
    logits, attention = net(x, lengths)
    logits2, attention2 = net(noisy, lengths)
    torch.testing.assert_close(logits2, logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(attention2, attention, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cfg", [
    {},
    {"attention_context": True},
    {"attention_context": True, "attention_layers": 1},
    {"attention_activation": "relu", "attention_layers": 3},
    {"bidirectional": False, "encoder_layers": 1},
    {"encoder_layers": 3},
])
def test_packed_and_masked_paths_agree(cfg):
    x, lengths = batch(b=7, t=15, seed=3)
    packed, masked = model(True, **cfg), model(False, **cfg)
    masked.load_state_dict(packed.state_dict())
    logits, attention = packed(x, lengths)
    logits2, attention2 = masked(x, lengths)
    torch.testing.assert_close(logits2, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(attention2, attention, rtol=0, atol=1e-5)


def test_packed_and_masked_paths_have_the_same_gradients():
    x, lengths = batch(seed=4)
    packed, masked = model(True), model(False)
    for net in (packed, masked):
        net(x, lengths)[0].square().sum().backward()
    for (name, p), q in zip(packed.named_parameters(), masked.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_context_attention_scores_frames_with_the_clip_mean():
    pool = SelfAttentionPooling(hidden=6, layers=2, dropout=0.0, context=True)
    assert pool.scorer[0].in_features == 12
    assert SelfAttentionPooling(6, layers=1, context=True).scorer[0].in_features == 12
    frames = torch.randn(3, 5, 6)
    mask = lengths_to_mask(torch.tensor([5, 2, 4]), 5)
    representation, weights = pool(frames, mask)
    assert representation.shape == (3, 6) and weights.shape == (3, 5)
    # The context is the mean over *real* frames only, so padded frames cannot change the scores.
    noisy = frames.clone()
    noisy[~mask] = 1e3
    torch.testing.assert_close(pool(noisy, mask)[1], weights)


def test_relu_activation_gives_valid_attention():
    x, lengths = batch()
    net = model(attention_activation="relu")
    assert isinstance(net.attention.scorer[1], torch.nn.ReLU)
    logits, attention = net(x, lengths)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(attention.sum(1), torch.ones(len(lengths)))


@pytest.mark.parametrize("field, value", [
    ("encoder_dim", 0),
    ("input_size", -1),
    ("encoder_layers", 0),
    ("attention_layers", 0),
    ("encoder_dropout", 1.0),
    ("attention_dropout", -0.1),
    ("attention_activation", "sigmoid"),
])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{field: value})


@pytest.mark.parametrize("packed", [True, False])
def test_bad_lengths_are_rejected(packed):
    x, _ = batch(b=2, t=4)
    with pytest.raises(ValueError, match="lengths"):
        model(packed)(x, torch.tensor([4, 0]))
    with pytest.raises(ValueError, match="lengths"):
        model(packed)(x, torch.tensor([5, 2]))
    with pytest.raises(ValueError, match="lengths"):
        model(packed)(x, torch.tensor([4]))


def test_wrong_feature_count_is_rejected():
    with pytest.raises(ValueError, match="35"):
        model()(torch.zeros(2, 4, 17), torch.tensor([4, 4]))


@pytest.mark.parametrize("packed", [True, False])
def test_state_dict_round_trip_gives_identical_logits(tmp_path, packed):
    x, lengths = batch()
    net = model(seed=1)
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    loaded = model(packed, seed=2)
    loaded.load_state_dict(torch.load(path, weights_only=True))
    expected = net(x, lengths)[0]
    if packed:
        assert torch.equal(loaded(x, lengths)[0], expected)
    else:
        torch.testing.assert_close(loaded(x, lengths)[0], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("packed", [True, False])
def test_a_few_adam_steps_reduce_the_loss(packed):
    # Toy separable problem: the class is whether AU column 0 is mostly high or low.
    g = torch.Generator().manual_seed(0)
    x, lengths = batch(b=16, t=8, seed=5)
    y = torch.randint(0, 2, (16,), generator=g)
    x[:, :, 0] += (y.float() * 2 - 1).view(-1, 1) * 2
    x = x.masked_fill(~lengths_to_mask(lengths, 8).unsqueeze(2), 0.0)
    net = model(packed, n_classes=2).train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(net(x, lengths)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


@pytest.mark.parametrize("packed", [True, False])
def test_lengths_may_be_int32(packed):
    x, lengths = batch()
    net = model(packed)
    torch.testing.assert_close(net(x, lengths.int())[0], net(x, lengths)[0])



# --- dropout masks: where they come from ------------------------------------------------------------

def noise(seed: int = 7, frames: int = 12) -> DropoutNoise:
    return DropoutNoise(torch.Generator().manual_seed(seed), frames)


def dropout_model(packed: bool) -> Sequence1Modal:
    torch.manual_seed(0)
    return Sequence1Modal(ModelConfig(encoder_dim=8, encoder_layers=3), packed=packed).train()


def test_packed_and_masked_paths_draw_the_same_dropout_masks():
    """The paper's dropout (0.3) between layers and in the attention, in training mode."""
    x, lengths = batch(b=6, t=12, seed=2)
    packed, masked = dropout_model(True), dropout_model(False)
    logits, attention = packed(x, lengths, noise())
    logits2, attention2 = masked(x, lengths, noise())
    torch.testing.assert_close(logits2, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(attention2, attention, rtol=0, atol=1e-6)
    assert not torch.allclose(masked(x, lengths, noise(seed=8))[0], logits2, atol=1e-3)  # the masks matter


def test_without_noise_both_paths_draw_the_same_masks_from_the_global_rng():
    x, lengths = batch(b=6, t=12, seed=2)
    outputs = []
    for packed in (True, False):
        net = dropout_model(packed)
        torch.manual_seed(3)
        outputs.append(net(x, lengths)[0])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-5)


def test_dropout_masks_do_not_depend_on_how_far_the_batch_is_padded():
    x, lengths = batch(b=6, t=12, seed=2)
    wider = torch.cat([x, torch.zeros(6, 3, 35)], dim=1)
    net = dropout_model(False)
    logits, attention = net(x, lengths, noise(frames=15))
    logits2, attention2 = net(wider, lengths, noise(frames=15))
    torch.testing.assert_close(logits2, logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(attention2[:, :12], attention, rtol=0, atol=1e-7)


def test_noise_shorter_than_the_batch_is_refused():
    x, lengths = batch(b=3, t=12)
    with pytest.raises(ValueError, match="DropoutNoise.frames=10"):
        dropout_model(False)(x, lengths, noise(frames=10))


def test_masked_model_compiles_and_computes_the_same():
    """torch.compile (here the aot_eager backend, no C++ compiler needed) keeps the LSTM out of its graphs."""
    x, lengths = batch(seed=6)
    net = model(False)
    expected = net(x, lengths)[0]
    compiled = torch.compile(net, backend="aot_eager")
    torch.testing.assert_close(compiled(x, lengths)[0], expected, rtol=0, atol=1e-6)


def test_importing_the_model_does_not_import_dynamo():
    """torch._dynamo costs ~70 MB of memory; only a caller that compiles should pay it."""
    code = "import sys, aus_lib.model; assert 'torch._dynamo' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
