"""ReidCollator: decoding, metadata tensors, captions, domains and errors."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image
from torch.utils.data import DataLoader

from hf_reid.data.collate import ReidCollator
from hf_reid.data.features import REID_FEATURES
from hf_reid.data.labels import domain_index, relabel
from hf_reid.data.samplers import PKSampler
from hf_reid.data.transforms import ReidTestTransform, ReidTrainTransform, ReidTransformConfig

CONFIG = ReidTransformConfig(height=32, width=16)


@pytest.fixture(scope="module")
def reid_split(tmp_path_factory):
    """A tiny split in the Re-ID schema: 8 JPEGs (4 identities x 2), mixed modes and sizes."""
    folder = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    rows = {name: [] for name in REID_FEATURES}
    for i in range(8):
        pid, camid = 10 + i // 2, i % 2
        path = folder / f"{pid:04d}_c{camid + 1}s1_000{i}_01.jpg"
        pixels = rng.integers(0, 256, (40 + i, 20 + i, 3), dtype=np.uint8)
        image = Image.fromarray(pixels) if i != 3 else Image.fromarray(pixels[..., 0])  # one grayscale file
        image.save(path, quality=95)
        rows["image"].append(str(path))
        rows["pid"].append(pid)
        rows["camid"].append(camid)
        rows["path"].append(path.name)
        rows["domain"].append("market1501" if i < 6 else "dukemtmc")
        rows["clothes_id"].append(-1)
        rows["modality"].append(i % 2)
        rows["captions"].append([f"person {pid}", "walking"] if i % 3 else [])
    dataset, _ = relabel(Dataset.from_dict(rows, features=REID_FEATURES))
    return dataset


def test_collated_batch_types_shapes_and_values(reid_split):
    collator = ReidCollator(ReidTestTransform(CONFIG), domain_to_index=domain_index(reid_split))
    rows = [reid_split[i] for i in range(8)]
    batch = collator(rows)
    assert set(batch) == {"pixel_values", "labels", "pids", "camids", "clothes_ids", "modalities", "domains"}
    assert batch["pixel_values"].shape == (8, 3, 32, 16) and batch["pixel_values"].dtype == torch.float32
    for key in ("labels", "pids", "camids", "clothes_ids", "modalities", "domains"):
        assert batch[key].dtype == torch.int64 and batch[key].shape == (8,)
    assert batch["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert batch["pids"].tolist() == reid_split["pid"]
    assert batch["modalities"].tolist() == [0, 1] * 4
    assert batch["domains"].tolist() == [1] * 6 + [0] * 2  # sorted names: dukemtmc=0, market1501=1
    files = [cell["path"] for cell in reid_split.cast_column("image", ImageFeature(decode=False))["image"]]
    expected = ReidTestTransform(CONFIG)([Image.open(file).convert("RGB") for file in files])
    assert torch.equal(batch["pixel_values"], expected)


def test_undecoded_rows_give_the_same_pixels_as_decoded_rows(reid_split):
    collator = ReidCollator(ReidTestTransform(CONFIG), columns=["labels", "captions"])
    raw = reid_split.cast_column("image", ImageFeature(decode=False))
    decoded = collator([reid_split[i] for i in range(8)])
    undecoded = collator([raw[i] for i in range(8)])
    assert set(decoded) == {"pixel_values", "labels", "captions"}
    assert torch.equal(decoded["pixel_values"], undecoded["pixel_values"])
    assert decoded["captions"] == reid_split["captions"]
    assert all(isinstance(c, list) for c in decoded["captions"])
    # a dataset[i:j] dict of lists works too
    assert torch.equal(collator(reid_split[0:8])["pixel_values"], decoded["pixel_values"])


def test_collator_with_pk_sampler_and_train_transform(reid_split):
    sampler = PKSampler(reid_split["label"], p=2, k=2, seed=0)
    collator = ReidCollator(ReidTrainTransform(CONFIG), columns=["label", "pid"])
    loader = DataLoader(reid_split, batch_size=sampler.batch_size, sampler=sampler, collate_fn=collator)
    batches = list(loader)
    assert len(batches) == len(sampler) // sampler.batch_size
    for batch in batches:
        assert batch["pixel_values"].shape == (4, 3, 32, 16)
        labels = batch["labels"].view(2, 2)
        assert (labels == labels[:, :1]).all() and labels[0, 0] != labels[1, 0]


def test_collator_errors_name_the_column_or_file(reid_split, tmp_path):
    rows = [reid_split[i] for i in range(2)]
    with pytest.raises(ValueError, match="domain_to_index"):
        ReidCollator(ReidTestTransform(CONFIG), columns=["domains"])(rows)
    with pytest.raises(KeyError, match="'unknown_place'"):
        ReidCollator(ReidTestTransform(CONFIG), columns=["domains"], domain_to_index={"unknown_place": 0})(
            rows
        )
    with pytest.raises(KeyError, match="'source'"):
        ReidCollator(ReidTestTransform(CONFIG), columns=["sources"])(rows)
    with pytest.raises(ValueError, match="unknown column"):
        ReidCollator(ReidTestTransform(CONFIG), columns=["heights"])
    broken = tmp_path / "0001_c1s1_000001_01.jpg"
    broken.write_bytes(b"not a jpeg")
    bad_row = dict(rows[0], image={"bytes": None, "path": str(broken)}, path=broken.name)
    with pytest.raises(ValueError, match=r"0001_c1s1_000001_01\.jpg"):
        ReidCollator(ReidTestTransform(CONFIG))([bad_row])


def test_worker_batches_equal_in_process_batches(reid_split):
    """Batches built in a DataLoader worker (output allocated in shared memory) are the same."""
    collator = ReidCollator(ReidTestTransform(CONFIG), columns=["labels"])
    in_process, in_worker = (
        list(DataLoader(reid_split, batch_size=4, collate_fn=collator, num_workers=workers))
        for workers in (0, 1)
    )
    assert len(in_process) == len(in_worker) == 2
    for a, b in zip(in_process, in_worker):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])


def test_seeded_augmentation_depends_only_on_seed_epoch_and_images(reid_split):
    """With seed=, a batch's augmentation does not depend on what was drawn before it or in which
    process it is built (what a resume mid-epoch needs), but changes with the epoch."""
    config = ReidTransformConfig(height=32, width=16, random_erasing_p=1.0, flip_p=0.5, pad=4)
    rows = [reid_split[i] for i in range(8)]

    def collate(batch_rows, epoch=0, seed=0, warm_up=0):
        collator = ReidCollator(ReidTrainTransform(config), columns=["labels"], seed=seed)
        collator.set_epoch(epoch)
        for _ in range(warm_up):  # batches drawn before this one must not matter
            collator(rows[4:])
        return collator(batch_rows)["pixel_values"]

    first = collate(rows[:4])
    assert torch.equal(first, collate(rows[:4], warm_up=3))
    assert not torch.equal(first, collate(rows[:4], epoch=1))
    assert not torch.equal(first, collate(rows[:4], seed=1))
    # the same image twice in one batch (PK top-up) gets two different draws
    repeated = collate([rows[0], rows[0]])
    assert not torch.equal(repeated[0], repeated[1])

    collator = ReidCollator(ReidTrainTransform(config), columns=["labels"], seed=0)
    collator.set_epoch(2)
    in_process, in_worker = (
        list(DataLoader(reid_split, batch_size=4, collate_fn=collator, num_workers=workers))
        for workers in (0, 1)
    )
    for a, b in zip(in_process, in_worker):
        assert torch.equal(a["pixel_values"], b["pixel_values"])
    with pytest.raises(ValueError, match="not both"):
        ReidCollator(ReidTrainTransform(config), seed=0, generator=torch.Generator())


def test_runner_epoch_reaches_the_seeded_collator(reid_split):
    from hf_reid.training import set_sampler_epoch

    collator = ReidCollator(ReidTrainTransform(CONFIG), columns=["labels"], seed=0)
    sampler = PKSampler(reid_split["label"], p=2, k=2, seed=0)
    loader = DataLoader(reid_split, batch_size=sampler.batch_size, sampler=sampler, collate_fn=collator)
    set_sampler_epoch(loader, 3)
    assert collator.epoch == 3 and sampler.epoch == 3
