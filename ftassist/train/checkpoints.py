"""Checkpoints that are either complete or absent, and the newest one to resume from.

HF `Trainer` writes `checkpoint-N/` file by file, so a kill -9 mid-save leaves a folder that
looks real but is not. `AtomicCheckpointMixin` makes the Trainer write each checkpoint into a
hidden staging folder and rename it into place only when every file is written; a folder
named `checkpoint-N` is therefore always complete. `newest_checkpoint` still checks the files
(belt and braces) and skips anything partial. A checkpoint holds the adapter, optimizer,
scheduler, RNG state and trainer state - never the base model (a full fine-tuning run's checkpoint holds its
whole model, which is what it trains).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

# Files without which a checkpoint cannot be resumed exactly, besides its weights (an adapter, or for full
# fine-tuning the whole model: `ftassist.train.weights`).
REQUIRED = ("optimizer.pt", "scheduler.pt", "trainer_state.json")
_NAME = re.compile(r"^checkpoint-(\d+)$")
STAGING = ".staging"


def is_complete(path: Path) -> bool:
    """True when `path` is a `checkpoint-N` folder holding every file needed to resume."""
    from ftassist.train.weights import holds_adapter, holds_full_model

    return bool(_NAME.match(path.name)) and path.is_dir() and all((path / f).is_file() for f in REQUIRED) and (
        any(path.glob("rng_state*.pth"))) and (holds_adapter(path) or holds_full_model(path))


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (by step)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if is_complete(p)]
    return sorted(found, key=checkpoint_step)


def newest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under `root`, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint folder named checkpoint-STEP; ValueError for any other name."""
    found = _NAME.match(Path(path).name)
    if found is None:
        raise ValueError(f"{path} is not named checkpoint-STEP")
    return int(found.group(1))


def clean_partial(root: str | Path) -> None:
    """Remove staging leftovers and incomplete `checkpoint-N` folders (from a killed save)."""
    root = Path(root)
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.startswith(STAGING) or (_NAME.match(p.name) and not is_complete(p)):
            shutil.rmtree(p, ignore_errors=True)


def prune(root: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints."""
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


class AtomicCheckpointMixin:
    """Mix into a transformers `Trainer`: checkpoints are staged, then renamed into place.

    Set `self.keep_checkpoints` (default 2) for how many to keep; the Trainer's own
    `save_total_limit` must be None (its rotation would act on the staging folder).
    """

    keep_checkpoints = 2
    _staging: Path | None = None

    def _get_output_dir(self, trial):  # noqa: D401 - transformers hook
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        # One staging folder for every rank: each writes its own files into it (rank N its rng_state_N.pth, which
        # resuming needs for the same dropout masks), and rank 0 moves it into place once all have written.
        root = Path(super()._get_output_dir(trial))
        staging = root / f"{STAGING}-{self.state.global_step}"
        main = self.args.should_save
        if main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self._staging = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()
        if not main:
            return
        name = f"checkpoint-{self.state.global_step}"
        final = root / name
        if final.exists():  # saved again after a resume at the same step
            shutil.rmtree(final)
        os.replace(staging / name, final)
        shutil.rmtree(staging, ignore_errors=True)
        prune(root, self.keep_checkpoints)


def save_adapter(model, folder: str | Path) -> None:
    """Save the trained adapter alone ("default"): trl keeps a frozen reference copy ("ref") beside it in DPO and
    GRPO stages, which is not part of what was trained. A model without adapters (`--method full`) saves whole."""
    names = getattr(model, "peft_config", None)
    if isinstance(names, dict) and len(names) > 1 and "default" in names:
        model.save_pretrained(folder, selected_adapters=["default"])
    else:
        model.save_pretrained(folder)
