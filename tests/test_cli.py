"""Tests for the command line: help, make-tiny, show-config, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vlmlib.cli import main


def test_python_m_vlmlib_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "vlmlib", "--help"], capture_output=True, text=True, check=True)
    assert "make-tiny" in result.stdout and "show-config" in result.stdout


def test_make_tiny_prints_where_it_cached_the_assets(tiny_config, tiny_assets, capsys: pytest.CaptureFixture[str]):
    # tiny_config points VLM_CACHE_DIR at this session's folder; the overrides match it, so nothing is rebuilt.
    code = main(["make-tiny", "--set", "data.synthetic_num_train=24", "--set", "data.synthetic_num_val=8"])
    output = capsys.readouterr().out
    assert code == 0
    assert str(tiny_assets[0]) in output and str(tiny_assets[1]) in output
    assert "tiny model parameters:" in output


def test_show_config_prints_the_resolved_yaml(capsys: pytest.CaptureFixture[str]):
    assert main(["show-config", "--config", "lightweight", "--set", "training.seed=5"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lora"]["r"] == 8 and printed["training"]["seed"] == 5


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["show-config", "--set", "training.learning_rte=1"], "unknown key 'training.learning_rte'"),
        (["show-config", "--config", "no-such-config"], "unknown config 'no-such-config'"),
        (["show-config", "--config", "missing.yaml"], "config file missing.yaml does not exist"),
    ],
    ids=["unknown-key", "unknown-named-config", "missing-file"],
)
def test_cli_bad_input_gives_one_line_error_and_exit_2(arguments: list[str], expected: str, capsys: pytest.CaptureFixture[str]):
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert expected in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_cli_bad_yaml_file_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    assert main(["show-config", "--config", str(path)]) == 2
    assert "bad.yaml must hold a mapping" in capsys.readouterr().err
