"""Pictures of what a policy's views look like, so a reader sees what was compared: the same 8
dataset images (top row), each with a few draws of T and of T' below. `byol-sweep views` draws one;
a sweep's driver draws every policy it used and logs them on the sweep's run for the report."""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sweep.state import SweepRun
from sweep.summary import SweepOutcome
from sweep.tracking.store import client_for
from sweep.tracking.writers import write
from trainer import TrainConfig
from trainer.augment import augment, resize_only
from trainer.data import load, stratified_subset
from trainer.policies import policy_views

IMAGES = 8


def sample_images(config: TrainConfig, seed: int = 0) -> torch.Tensor:
    """IMAGES images of config.dataset's validation split, one per class where it can."""
    data = load(config.dataset, data_root=config.data_root, download=config.download, cache_dir=config.cache_dir,
                image_size=config.image_size, eval_split="val")
    return data.eval_images[stratified_subset(data.eval_labels, IMAGES, seed)][:IMAGES]


def draw_views(config: TrainConfig, out: str | Path, draws: int = 2, seed: int = 0,
               images: torch.Tensor | None = None) -> Path:
    """A PNG of config's policy at config.aug_strength on `images` (default: sample_images): the
    originals, then `draws` rows of T and of T'."""
    images = sample_images(config, seed) if images is None else images
    t, t_prime = policy_views(config.policy, config.aug_strength, config.policies)
    gen = torch.Generator().manual_seed(seed)
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    rows = [("image", resize_only(images, config.image_size, zero, one))]
    for i in range(draws):
        rows.append((f"T #{i + 1}", augment(images, t, config.image_size, gen, zero, one)))
        rows.append((f"T' #{i + 1}", augment(images, t_prime, config.image_size, gen, zero, one)))
    figure = Figure(figsize=(1.2 * len(images) + 0.8, 1.2 * len(rows) + 0.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), len(images), squeeze=False)
    for r, (label, batch) in enumerate(rows):
        for c, image in enumerate(batch):
            ax = axes[r][c]
            ax.imshow(np.clip(image.permute(1, 2, 0).numpy(), 0, 1), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    figure.suptitle(f"policy {config.policy} at aug_strength {config.aug_strength:g} on {config.dataset}", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)
    return out


def sweep_policies(run: SweepRun) -> list[str]:
    spec = run.spec
    named = [spec.base.get("policy", TrainConfig().policy), *spec.grid.get("policy", [])]
    if "policy" in spec.search:
        named += list(spec.search["policy"].values)
    return list(dict.fromkeys(str(p) for p in named))


def log_views(run: SweepRun, outcome: SweepOutcome) -> None:
    """Draw each policy the sweep used at aug_strength 1.0 and at the strength it selected (the best
    trial's, else the base's), log the PNGs on the sweep's run (views/) and list them in its tag
    byol_sweep.views. A failure is said, never fatal: the report then says the picture is missing."""
    base = run.spec.train_config({})
    chosen = (outcome.best_config or {}).get("aug_strength", base.aug_strength)
    entries = []
    try:
        images = sample_images(base)  # the same images in every picture, read once
        with tempfile.TemporaryDirectory() as folder:
            for policy in sweep_policies(run):
                for strength in dict.fromkeys([1.0, float(chosen)]):
                    name = f"{policy}@{strength:g}.png"
                    draw_views(replace(base, policy=policy, aug_strength=strength, policy_params=""), Path(folder) / name,
                               images=images)
                    label = "as written (aug_strength 1)" if strength == 1.0 else f"at the selected aug_strength {strength:g}"
                    entries.append({"policy": policy, "strength": strength, "label": label, "path": f"views/{name}"})
            client_for(run.uri).log_artifacts(run.parent_run_id, folder, "views")
    except Exception as err:  # the dataset, the drawing or the artifact store
        print(f"the pictures of the policies' views could not be logged: {str(err).strip().splitlines()[-1:]}",
              file=sys.stderr, flush=True)
        return
    write(run.uri, run.parent_run_id, "set_tag", run_id=run.parent_run_id, key="byol_sweep.views",
          value=json.dumps(entries))
