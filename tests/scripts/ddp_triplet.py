"""Two-process training of a toy embedding with batch-hard triplet loss on gathered features.

Launched by tests/test_training_distributed.py through ``accelerate launch --multi_gpu
--num_processes 2`` with ``ACCELERATE_USE_CPU=1`` (two gloo processes on CPU). Every rank writes
``rank<i>.json`` into ``--output_dir`` with what the test checks: the world size, the local and
gathered batch sizes, whether the ranks' identities were disjoint, a gradient check of
``gather_with_grad``, the loss curve and the held-out mAP before and after training.

Batches come from hf_reid.data's PKSampler with ``num_replicas`` = the number of processes, so
every optimisation step holds distinct identities on each rank.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_toys import (
    ToyEmbedder,
    ToyReidDataset,
    batch_hard_triplet,
    make_clustered_data,
    mean_average_precision,
)

from hf_reid.data import PKSampler
from hf_reid.training import (
    StageRunner,
    build_optimizer,
    build_scheduler,
    create_accelerator,
    extract_features,
    gather_with_grad,
    list_checkpoints,
    set_seed,
)


def held_out_map(features: dict) -> float:
    """mAP with the first sample of each held-out identity as query and the rest as gallery."""
    pids = features["pids"]
    first = torch.zeros(len(pids), dtype=torch.bool)
    for pid in pids.unique():
        first[(pids == pid).nonzero()[0]] = True
    feats = features["features"]
    return mean_average_precision(feats[first], feats[~first], pids[first], pids[~first])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    accelerator = create_accelerator(args.output_dir, seed=0)
    set_seed(0)
    inputs, pids, camids = make_clustered_data(84, 6, seed=0)
    train = pids < 64
    train_set = ToyReidDataset(inputs[train], pids[train], camids[train])
    eval_set = ToyReidDataset(inputs[~train], pids[~train], camids[~train])  # 20 ids x 6 = 120

    model = ToyEmbedder()
    optimizer = build_optimizer(model, "adam", lr=1e-2)
    scheduler = build_scheduler(optimizer, "cosine", total=args.epochs, warmup=1, warmup_init_lr=1e-3)
    s = PKSampler(pids[train], p=4, k=4, seed=0, num_replicas=accelerator.num_processes)
    train_loader = DataLoader(train_set, batch_size=s.batch_size, sampler=s)
    eval_loader = DataLoader(eval_set, batch_size=7)  # 120 is not a multiple of 2 x 7: exercises dedup
    model, optimizer, train_loader, eval_loader = accelerator.prepare(
        model, optimizer, train_loader, eval_loader
    )

    def embed(batch):
        return model(batch["inputs"])

    before = extract_features(embed, eval_loader, accelerator, model=model, progress_bar=False)

    # Gradient check: the DDP gradient of the loss on gathered features, times the world size,
    # equals the gradient of the same loss computed on the union batch in one process.
    check_sampler = PKSampler(
        pids[train],
        p=4,
        k=4,
        seed=123,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
    )
    check_indices = list(check_sampler)[: check_sampler.batch_size]  # this rank's part of the first step
    batch = default_collate([train_set[i] for i in check_indices])
    model.eval()  # no dropout, so both computations see the same function
    loss = batch_hard_triplet(gather_with_grad(embed(batch)), gather_with_grad(batch["pids"]))
    accelerator.backward(loss)
    ddp_grads = [p.grad.detach().clone() for p in model.parameters()]
    optimizer.zero_grad()
    reference = copy.deepcopy(accelerator.unwrap_model(model))
    full_loss = batch_hard_triplet(
        reference(accelerator.gather(batch["inputs"])), accelerator.gather(batch["pids"])
    )
    full_grads = torch.autograd.grad(full_loss, list(reference.parameters()))
    grad_error = max(
        float((g * accelerator.num_processes - f).abs().max()) for g, f in zip(ddp_grads, full_grads)
    )
    grad_scale = max(float(f.abs().max()) for f in full_grads)
    model.train()

    record = {"local_rows": [], "gathered_rows": [], "disjoint": [], "losses": []}

    def compute_loss(batch):
        local = embed(batch)
        gathered = gather_with_grad(local)
        labels = gather_with_grad(batch["pids"])
        rank_ids = [set(part.tolist()) for part in labels.chunk(accelerator.num_processes)]
        record["local_rows"].append(local.shape[0])
        record["gathered_rows"].append(gathered.shape[0])
        record["disjoint"].append(len(set.intersection(*rank_ids)) == 0)
        loss = batch_hard_triplet(gathered, labels)
        record["losses"].append(loss.detach().item())
        return loss, {"triplet": loss.detach()}

    runner = StageRunner(
        accelerator,
        args.output_dir,
        ["triplet"],
        seed=0,
        checkpoint_every=10,
        log_every=4,
        progress_bar=False,
    )
    runner.train_stage(
        "triplet",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        dataloader=train_loader,
        compute_loss=compute_loss,
        epochs=args.epochs,
    )
    after = extract_features(embed, eval_loader, accelerator, model=model, progress_bar=False)

    checkpoints = list_checkpoints(args.output_dir)
    result = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "grad_error": grad_error,
        "grad_scale": grad_scale,
        "eval_rows": len(after["pids"]),
        "eval_pids_sorted": after["pids"].tolist() == sorted(after["pids"].tolist()),
        "map_before": held_out_map(before),
        "map_after": held_out_map(after),
        "latest_checkpoint_files": sorted(p.name for p in checkpoints[-1][0].iterdir())
        if checkpoints
        else [],
        "logged_losses": [e["triplet"] for e in runner.state.log_history if "triplet" in e],
        **record,
    }
    out = Path(args.output_dir) / f"rank{accelerator.process_index}.json"
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    from hf_reid.training.utils import exit_if_distributed

    main()
    exit_if_distributed()  # as recipe_cli does: no interpreter teardown around gloo's threads
