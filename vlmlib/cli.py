"""The command line: `vlmlib COMMAND` (or `python -m vlmlib COMMAND`).

Why: practitioners run the same pipeline as the chapters without opening a notebook.
Explained in: README, "From the command line".
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from vlmlib.config import ConfigError, config_to_dict, list_named_configs, load_config

__all__ = ["build_parser", "main"]


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="NAME|PATH",
                        help=f"named config ({', '.join(list_named_configs())}) or YAML file; repeat to layer them")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one value, e.g. --set training.max_steps=20")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with one sub-command per job."""
    parser = argparse.ArgumentParser(prog="vlmlib", description="Fine-tune Qwen2-VL to find nutrition tables.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    make_tiny = commands.add_parser("make-tiny", help="build and cache the tiny profile's model, processor and dataset")
    _add_config_arguments(make_tiny)
    make_tiny.add_argument("--rebuild", action="store_true", help="delete the cached copies first")
    show_config = commands.add_parser("show-config", help="print the resolved config as YAML")
    _add_config_arguments(show_config)
    make_labs = commands.add_parser("make-labs", help="write labs/ from solutions/ (TODOs in place of the solution regions)")
    make_labs.add_argument("--check", action="store_true", help="write nothing; exit 1 if labs/ differs from what would be written")
    make_labs.add_argument("--solutions", type=Path, default=Path("solutions"), help="folder of solved labs (default: solutions)")
    make_labs.add_argument("--labs", type=Path, default=Path("labs"), help="folder to write the labs into (default: labs)")
    return parser


def _run_make_tiny(arguments: argparse.Namespace) -> int:
    from vlmlib.models import count_parameters
    from vlmlib.tiny import ensure_tiny_assets, tiny_model_dir

    config = load_config(*arguments.config, overrides=arguments.overrides, profile="tiny")
    started = time.perf_counter()
    model_dir, dataset_dir = ensure_tiny_assets(config, rebuild=arguments.rebuild)
    seconds = time.perf_counter() - started
    from transformers import Qwen2VLForConditionalGeneration

    counts = count_parameters(Qwen2VLForConditionalGeneration.from_pretrained(tiny_model_dir(config)))
    print(f"tiny model and processor: {model_dir}")
    print(f"synthetic dataset:        {dataset_dir}")
    print(f"tiny model parameters:    {counts.total:,} (vision tower {counts.vision_tower:,}, "
          f"patch merger {counts.patch_merger:,}, language model {counts.language_model:,})")
    print(f"ready in {seconds:.1f} s")
    return 0


def _run_show_config(arguments: argparse.Namespace) -> int:
    config = load_config(*arguments.config, overrides=arguments.overrides)
    print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
    return 0


def _run_make_labs(arguments: argparse.Namespace) -> int:
    from vlmlib.labs import make_labs

    report = make_labs(arguments.solutions, arguments.labs, is_check=arguments.check)
    for path in report.written:
        print(f"wrote {path}")
    for path in report.differing:
        print(f"out of date: {path}")
    for path in report.extra:
        print(f"no solution for: {path} (delete it, or add its solution to {arguments.solutions})")
    if report.is_in_sync:
        print(f"labs in sync with {arguments.solutions}: {len(report.written) + len(report.unchanged)} files")
        return 0
    print(f"{arguments.labs} differs from what {arguments.solutions} gives; run: vlmlib make-labs")
    return 1


_COMMANDS = {"make-tiny": _run_make_tiny, "show-config": _run_show_config, "make-labs": _run_make_labs}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a bad input ends with a one-line message and exit status 2, not a traceback."""
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _COMMANDS[arguments.command](arguments)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"vlmlib {arguments.command}: error: {error}", file=sys.stderr)
        return 2
