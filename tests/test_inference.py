import numpy as np
import pandas as pd
import torch

from aus_lib import dataset, inference, posteriors
from aus_lib.ravdess import LABELS
from aus_lib.checkpoints import load_checkpoint


def test_posterior_files_for_every_fold(tiny_run):
    folder = tiny_run / "posteriors"
    files = posteriors.find_posterior_files(folder, "val")
    assert sorted(files) == [1, 2]
    assert files[1].name == "tiny-val--fold_1_outof_2.csv"
    for kind in ("predictions", "posteriors", "featAttention"):
        assert posteriors.side_file_path(files[1], kind).is_file()


def test_val_posteriors_cover_each_clip_once_with_one_weight_per_frame(tiny_run):
    manifest = pd.read_csv(tiny_run / "inputs.csv")
    tables = posteriors.read_run(tiny_run / "posteriors", "val")
    clips = pd.concat(tables.values())
    assert sorted(clips["clip"]) == sorted(manifest["clip"])
    frames = dict(zip(manifest["clip"], manifest["frames"]))
    assert all(len(a) == frames[c] for c, a in zip(clips["clip"], clips["attentions"]))
    assert all(abs(a.sum() - 1) < 1e-4 for a in clips["attentions"])


def test_long_table_has_probabilities_in_label_order(tiny_run):
    long = pd.read_csv(tiny_run / "posteriors" / "posteriors_long_val.csv")
    assert list(long.columns[:5]) == ["clip", "fold", "partition", "label", "prediction"]
    probs = long[[f"p_{e}" for e in LABELS]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)
    assert (np.array(LABELS)[probs.argmax(axis=1)] == long["prediction"]).all()


def test_long_table_equals_the_one_read_from_the_posterior_files(tiny_run, tmp_path):
    """extract_posteriors builds its long table from memory; it is exactly what the files it wrote give."""
    long = inference.extract_posteriors(tiny_run, "val", out_dir=tmp_path, progress=False)
    from_files = posteriors.to_long_table(posteriors.read_run(tmp_path, "val"), partition="val")
    pd.testing.assert_frame_equal(long, from_files, check_exact=True)


def test_predictions_match_the_checkpoint_clip_by_clip(tiny_run):
    """Batched, length-sorted inference gives each clip what the model gives it alone."""
    manifest = pd.read_csv(tiny_run / "inputs.csv")
    data = dataset.load_clips(manifest, progress=False)
    model, ckpt = load_checkpoint(tiny_run / "fold_1" / "checkpoint.pt")
    idx = inference.partition_index(manifest, 1, "val")[:6]
    pred = inference.predict(model, data.subset(idx), batch_size=4, normalization=ckpt.get("normalization"))
    for row, i in enumerate(idx):
        x = torch.from_numpy(data.clip(i))[None]
        with torch.no_grad():
            logits, att = model(x, torch.tensor([len(x[0])]))
        np.testing.assert_allclose(pred.logits[row], logits[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(pred.attentions[row], att[0].numpy(), atol=1e-6)


def test_partitions():
    m = pd.DataFrame({"fold": [1, 1, 2, 3]})
    assert list(inference.partition_index(m, 1, "val")) == [0, 1]
    assert list(inference.partition_index(m, 1, "train")) == [2, 3]
    assert list(inference.partition_index(m, 1, "all")) == [0, 1, 2, 3]


def test_train_partition_and_wrong_kfolds(tiny_run, tmp_path):
    long = inference.extract_posteriors(tiny_run, "train", out_dir=tmp_path, progress=False)
    assert set(long["partition"]) == {"train"} and len(long) == len(pd.read_csv(tiny_run / "inputs.csv"))
    import pytest

    with pytest.raises(ValueError, match="trained with 2 folds"):
        inference.extract_posteriors(tiny_run, "val", out_dir=tmp_path, kfolds=5, progress=False)
