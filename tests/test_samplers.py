"""PK / mixed identity samplers and the relabelling helpers."""

from collections import Counter

import numpy as np
import pytest
from datasets import Dataset
from torch.utils.data import DataLoader

from hf_reid.data.labels import concatenate_sources, domain_index, relabel
from hf_reid.data.samplers import MixedPKSampler, PKSampler


def make_labels(sizes, seed=0):
    """Labels with ``sizes[i]`` rows of identity ``10 * i + 3`` (sparse ids), in shuffled row order."""
    labels = np.repeat(10 * np.arange(len(sizes)) + 3, sizes)
    return np.random.default_rng(seed).permutation(labels)


SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 12, 4, 6, 20, 3, 5, 10, 4]


def batches_of(sampler, labels):
    indices = np.array(list(sampler))
    assert len(indices) == len(sampler)
    return indices.reshape(-1, sampler.batch_size), labels[indices].reshape(-1, sampler.batch_size)


def test_pk_batches_hold_p_identities_with_k_images_each():
    labels = make_labels(SIZES)
    sampler = PKSampler(labels, p=4, k=3, seed=1)
    _, batch_labels = batches_of(sampler, labels)
    for row in batch_labels:
        groups = row.reshape(4, 3)
        assert (groups == groups[:, :1]).all()  # K consecutive images of one identity
        assert len(set(groups[:, 0])) == 4  # P distinct identities


def test_epoch_length_is_exact_and_covers_the_dataset():
    labels = make_labels(SIZES)
    chunks = sum(max(1, n // 3) for n in SIZES)
    for drop_last, steps in ((True, chunks // 4), (False, -(-chunks // 4))):
        sampler = PKSampler(labels, p=4, k=3, drop_last=drop_last)
        assert sampler.num_steps == steps
        assert len(sampler) == steps * 4 * 3 == len(list(sampler))
    # drop_last=False: every identity appears, each with at least max(1, n // K) chunks.
    sampler = PKSampler(labels, p=4, k=3, drop_last=False)
    _, batch_labels = batches_of(sampler, labels)
    appearances = Counter(batch_labels.reshape(-1, 3)[:, 0].tolist())
    for i, n in enumerate(SIZES):
        assert appearances[10 * i + 3] >= max(1, n // 3)


def test_small_identities_are_topped_up_with_replacement_and_large_ones_do_not_repeat():
    labels = make_labels(SIZES)
    sampler = PKSampler(labels, p=4, k=4, seed=3, drop_last=False)
    indices, batch_labels = batches_of(sampler, labels)
    chunks = indices.reshape(-1, 4)
    chunk_labels = batch_labels.reshape(-1, 4)[:, 0]
    single = np.flatnonzero(labels == 3)  # identity with 1 image
    assert (chunks[chunk_labels == 3] == single[0]).all()
    pair = set(np.flatnonzero(labels == 13).tolist())  # identity with 2 images: both used, topped up
    for chunk in chunks[chunk_labels == 13]:
        assert set(chunk.tolist()) == pair
    # drop_last=True never uses more chunks than an identity has, so images of identities with
    # at least K images appear at most once per epoch.
    indices, _ = batches_of(PKSampler(labels, p=4, k=4, seed=3), labels)
    big = [i for i in indices.reshape(-1) if SIZES[(labels[i] - 3) // 10] >= 4]
    assert len(big) == len(set(big))


def test_seed_and_epoch_control_the_order():
    labels = make_labels(SIZES)
    first = list(PKSampler(labels, p=4, k=2, seed=5))
    assert first == list(PKSampler(labels, p=4, k=2, seed=5))
    assert first != list(PKSampler(labels, p=4, k=2, seed=6))
    sampler = PKSampler(labels, p=4, k=2, seed=5)
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and len(second) == len(first)
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_distributed_ranks_get_disjoint_identities_and_equal_lengths():
    labels = make_labels(SIZES * 3)
    world, p, k = 3, 2, 2
    per_rank = [PKSampler(labels, p=p, k=k, seed=9, num_replicas=world, rank=r) for r in range(world)]
    assert len({len(s) for s in per_rank}) == 1
    streams = [batches_of(s, labels)[1] for s in per_rank]
    for step in zip(*streams):
        identity_sets = []
        for batch in step:
            groups = batch.reshape(p, k)
            assert (groups == groups[:, :1]).all()
            identity_sets.append(set(groups[:, 0]))
        assert len(set.union(*identity_sets)) == world * p  # disjoint across ranks
    # rank=None yields the same batches interleaved step by step (what Accelerate shards).
    whole = np.array(list(PKSampler(labels, p=p, k=k, seed=9, num_replicas=world))).reshape(-1, p * k)
    for r, sampler in enumerate(per_rank):
        assert np.array_equal(whole[r::world], np.array(list(sampler)).reshape(-1, p * k))


def test_accelerate_prepared_loader_gives_each_process_its_rank_share():
    from accelerate.data_loader import prepare_data_loader

    labels = make_labels(SIZES * 2)
    world, p, k = 2, 3, 2
    for rank in range(world):
        sampler = PKSampler(labels, p=p, k=k, seed=4, num_replicas=world)
        loader = DataLoader(list(range(len(labels))), batch_size=sampler.batch_size, sampler=sampler)
        prepared = prepare_data_loader(loader, num_processes=world, process_index=rank, put_on_device=False)
        expected = PKSampler(labels, p=p, k=k, seed=4, num_replicas=world, rank=rank)
        for epoch in range(2):  # DataLoaderShard calls set_epoch(pass number) itself
            expected.set_epoch(epoch)
            got = [i for batch in prepared for i in batch.tolist()]
            assert got == list(expected)
        # split_batches=True: global batches of P*K*W are sliced per process, same result.
        sampler = PKSampler(labels, p=p, k=k, seed=4, num_replicas=world)
        loader = DataLoader(list(range(len(labels))), batch_size=sampler.batch_size * world, sampler=sampler)
        prepared = prepare_data_loader(loader, num_processes=world, process_index=rank, split_batches=True)
        expected.set_epoch(0)
        assert [i for batch in prepared for i in batch.tolist()] == list(expected)


def test_mixed_sampler_draws_fixed_shares_per_source():
    source0, source1 = make_labels(SIZES, seed=1), make_labels([3] * 30, seed=2)
    shares, k, world = [3, 2], 2, 2
    sampler = MixedPKSampler([source0, source1], shares=shares, k=k, seed=0, num_replicas=world)
    assert sampler.num_steps == PKSampler(source0, p=3, k=k, num_replicas=world).num_steps
    indices = np.array(list(sampler)).reshape(-1, world, sampler.batch_size)
    source_of = np.where(indices < len(source0), 0, 1)
    assert (source_of[..., : 3 * k] == 0).all() and (source_of[..., 3 * k :] == 1).all()
    all_labels = np.concatenate([source0, source1])
    for step in all_labels[indices]:  # (world, batch) labels of one optimisation step
        for batch in step:
            for part in (batch[: 3 * k], batch[3 * k :]):
                groups = part.reshape(-1, k)
                assert (groups == groups[:, :1]).all()
        assert len(set(step[:, : 3 * k : k].ravel())) == world * 3  # disjoint across ranks
        assert len(set(step[:, 3 * k :: k].ravel())) == world * 2
    # One label array + a source index gives the same layout.
    other = MixedPKSampler(
        all_labels,
        shares=shares,
        k=k,
        source_index=[0] * len(source0) + [1] * len(source1),
        num_replicas=world,
    )
    other_indices = np.array(list(other)).reshape(-1, world, other.batch_size)
    assert len(other) == len(sampler) and (np.where(other_indices < len(source0), 0, 1) == source_of).all()


def test_sampler_errors_name_the_problem():
    labels = make_labels([4, 4, 4])
    with pytest.raises(ValueError, match="3 identities"):
        PKSampler(labels, p=4, k=2)
    with pytest.raises(ValueError, match="rank"):
        PKSampler(labels, p=1, k=2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="shares"):
        MixedPKSampler([labels, labels], shares=[1], k=2)


def test_relabel_and_concatenate_sources_give_collision_free_contiguous_labels():
    a = Dataset.from_dict({"pid": [7, 2, 7, 9], "domain": ["a"] * 4})
    b = Dataset.from_dict({"pid": [2, 5, 5], "domain": ["b"] * 3})
    relabelled, mapping = relabel(a)
    assert mapping == {2: 0, 7: 1, 9: 2}
    assert relabelled["label"] == [1, 0, 1, 2]
    pooled = concatenate_sources({"first": a, "second": b})
    assert pooled["label"] == [1, 0, 1, 2, 3, 4, 4]  # pid 2 of "second" is not pid 2 of "first"
    assert pooled["source"] == [0, 0, 0, 0, 1, 1, 1]
    assert domain_index(pooled) == {"a": 0, "b": 1}
    pairs = set(zip(pooled["source"], pooled["pid"]))
    assert len(pairs) == len(set(pooled["label"]))
    with pytest.raises(KeyError, match="'person'"):
        relabel(a, column="person")
