"""A toy unsupervised recipe on the stage runner: the training labels are made anew at the start
of every epoch from the model's own outputs (as a pseudo-label method re-clusters), kept as
recipe state, and a PK sampler draws its batches from them.

    python relabel_toy.py --output_dir DIR [--resume] [--kill_at_step N]

``--kill_at_step N`` sends the process SIGKILL in the middle of optimizer step N (after the
forward pass), as a crash would. At the end the script writes ``final.safetensors`` (the weights)
and ``labels.json`` (the label state) into the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hf_reid.data import PKSampler
from hf_reid.training import StageRunner, build_optimizer, create_accelerator, set_seed

NUM_SAMPLES, NUM_CLUSTERS, EPOCHS = 96, 6, 4


class PseudoLabels:
    """The label state: current labels, the epoch they were made at, and a log of every relabel.
    It owns the sampler's labels: restoring the state restores what the sampler draws from."""

    def __init__(self, num_samples: int, sampler: PKSampler):
        self.labels = torch.zeros(num_samples, dtype=torch.long)
        self.epoch = -1
        self.history: list[list[int]] = []
        self.sampler = sampler

    def update(self, labels: torch.Tensor, epoch: int) -> None:
        self.labels, self.epoch = labels, epoch
        self.history.append(labels.tolist())
        self.sampler.set_labels(labels)

    def state_dict(self) -> dict:
        return {"labels": self.labels, "epoch": self.epoch, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.labels = state["labels"].clone()
        self.epoch = int(state["epoch"])
        self.history = [list(h) for h in state["history"]]
        self.sampler.set_labels(self.labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--resume", action="store_const", const="latest", default=None)
    parser.add_argument("--kill_at_step", type=int, default=None)
    args = parser.parse_args()

    accelerator = create_accelerator(args.output_dir, seed=0)
    set_seed(0)
    inputs = torch.randn(NUM_SAMPLES, 8, generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, NUM_CLUSTERS))
    sampler = PKSampler(torch.arange(NUM_SAMPLES) % NUM_CLUSTERS, p=3, k=4, seed=0)
    state = PseudoLabels(NUM_SAMPLES, sampler)
    loader = DataLoader(
        TensorDataset(inputs, torch.arange(NUM_SAMPLES)), batch_size=sampler.batch_size, sampler=sampler
    )
    model, optimizer = accelerator.prepare(model, build_optimizer(model.named_parameters(), "sgd", lr=0.1))

    def relabel(trainer_state) -> None:
        # "Clustering": the model's current arg-max, with some random reassignment (so the labels
        # depend on the weights and on the random stream at the epoch start, as DBSCAN on fresh
        # features and random tie-breaking would).
        with torch.no_grad():
            labels = model(inputs).argmax(dim=1)
        flip = torch.rand(NUM_SAMPLES) < 0.2
        labels[flip] = torch.randint(0, NUM_CLUSTERS, (int(flip.sum()),))
        state.update(labels, trainer_state.epoch)

    def compute_loss(batch):
        x, rows = batch
        loss = nn.functional.cross_entropy(model(x), state.labels[rows])
        if args.kill_at_step is not None and runner.state.global_step + 1 == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return loss, {}

    runner = StageRunner(
        accelerator,
        args.output_dir,
        ["relabel"],
        seed=0,
        checkpoint_every=3,
        total_limit=2,
        resume=args.resume,
        progress_bar=False,
        recipe_state={"pseudo_labels": state},
    )
    runner.train_stage(
        "relabel",
        model=model,
        optimizer=optimizer,
        dataloader=loader,
        compute_loss=compute_loss,
        epochs=EPOCHS,
        on_epoch_start=relabel,
    )
    out = Path(args.output_dir)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "final.safetensors"))
    (out / "labels.json").write_text(
        json.dumps({"labels": state.labels.tolist(), "epoch": state.epoch, "history": state.history})
    )


if __name__ == "__main__":
    main()
