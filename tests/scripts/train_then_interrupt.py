"""Run `vlmlib train`, interrupting itself at a chosen point, as a killed or Ctrl-C'd job would be.

Usage: python tests/scripts/train_then_interrupt.py MODE STEP -- <vlmlib train arguments>

MODE:
    none                 train to the end
    sigkill-after-save   SIGKILL right after checkpoint-STEP is complete
    sigkill-during-save  SIGKILL while checkpoint-STEP is half written (weights, no optimizer)
    sigint-after-save    SIGINT (Ctrl-C) right after checkpoint-STEP is complete
The signals are real: the process is killed by the kernel, or interrupted by Python's own handler.
"""

from __future__ import annotations

import os
import signal
import sys

from transformers import Trainer

from vlmlib.cli import main


def _interrupt_at(mode: str, step: int) -> None:
    """Patch the Trainer so the process receives the signal at the point `mode` names."""
    save_checkpoint = Trainer._save_checkpoint
    save_optimizer = Trainer._save_optimizer_and_scheduler

    def save_checkpoint_then_signal(self, *args, **kwargs):
        save_checkpoint(self, *args, **kwargs)
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL if mode == "sigkill-after-save" else signal.SIGINT)

    def die_before_optimizer(self, *args, **kwargs):
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        save_optimizer(self, *args, **kwargs)

    if mode in ("sigkill-after-save", "sigint-after-save"):
        Trainer._save_checkpoint = save_checkpoint_then_signal
    elif mode == "sigkill-during-save":
        Trainer._save_optimizer_and_scheduler = die_before_optimizer
    elif mode != "none":
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    mode, step, separator, *train_arguments = sys.argv[1:]
    assert separator == "--", __doc__
    _interrupt_at(mode, int(step))
    sys.exit(main(["train", *train_arguments]))
