"""Static checks of the chapters under the `full` profile, which needs a GPU this suite lacks.

Why: the full profile's pages run only on a rented GPU, where a mistake costs an hour. Two kinds
of mistake show in the chapter sources alone:

- a batch built by a collator (on the CPU) and fed to the model by hand must first be moved to the
  model's device; the Trainer does that for its own batches, nobody does it for a chapter's;
- each page's full-profile budget must fit the book's time limits. Each cell's time is estimated
  from the budget (steps, answers, model loads) with the constants of book/costs.md: the book must
  build in 45 minutes on an NVIDIA L4, each cell within the execution timeout of _config.yml.

The estimate is arithmetic, not a measurement; book/costs.md says where each constant comes from.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml

from vlmlib.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
COSTS_PAGE = ROOT / "book" / "costs.md"
BOOK_LIMIT_MINUTES = 45  # issue 18: the whole full book on one 24 GB L4
LARGEST_CARD_GB = 16  # issue 18: the full book fits a 16 GB card
GPUS = ("l4", "a100")
NUM_TRAIN_IMAGES, NUM_VAL_IMAGES = 1083, 123  # openfoodfacts/nutrition-table-detection
GENERATE_BATCH_SIZE = 8  # the default of vlmlib.inference.generate_answers (chapters 0, 2, merges)
CHAPTER_NUMBERS = ("00", "01", "02", "03", "04", "05", "06")
BUDGETED_CHAPTERS = ("00", "02", "04", "05", "06")  # those that load a model under full


def _chapter_source(number: str) -> str:
    return next(CHAPTERS.glob(f"{number}_*.py")).read_text()


def _one_line(text: str) -> str:
    """Return text with whitespace runs as one space and adjacent string literals joined."""
    return re.sub(r'"\s+"', "", re.sub(r"\s+", " ", text))


# --- batches reach the model's device ------------------------------------------------------------


def _call_name(call: ast.Call) -> str:
    function = call.func
    if isinstance(function, ast.Name):
        return function.id
    return function.attr if isinstance(function, ast.Attribute) else ""


def _names_in(node: ast.AST) -> set[str]:
    return {child.id for child in ast.walk(node) if isinstance(child, ast.Name)}


def _assigns(node: ast.Assign, name: str) -> bool:
    return any(isinstance(target, ast.Name) and target.id == name for target in node.targets)


def _is_collator_call(node: ast.AST) -> bool:
    """True if the expression calls a collator: `trainer.data_collator(x)`, `CollatorV3(p)(x)`."""
    for child in ast.walk(node):
        if isinstance(child, ast.Call):
            inner = child.func if isinstance(child.func, ast.Call) else child
            if "collator" in _call_name(inner).lower():
                return True
    return False


def _moves_to_a_device(node: ast.AST) -> bool:
    """True if the expression calls `.to(...)` with a device argument (`.to(model.device)`)."""
    for child in ast.walk(node):
        if isinstance(child, ast.Call) and _call_name(child) == "to":
            parts = [part for argument in child.args for part in ast.walk(argument)]
            if any(
                isinstance(part, ast.Attribute)
                and part.attr == "device"
                or isinstance(part, ast.Name)
                and "device" in part.id
                for part in parts
            ):
                return True
    return False


def _is_model_call(call: ast.Call) -> bool:
    """True for calls that run the model: `model(**batch)`, `compute_loss`, `generate`."""
    name = _call_name(call)
    is_loss = name.startswith("compute_") and name.endswith(
        "loss"
    )  # compute_loss, compute_answer_loss
    return name in {"model", "forward", "generate"} or is_loss


def _fed_collator_batches(source: str) -> dict[str, ast.expr]:
    """Return {name: the expression that built it} for collator batches fed to a model."""
    tree = ast.parse(source)
    batches = {
        target.id: node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and _is_collator_call(node.value)
    }
    fed = set()
    model_calls = [
        node for node in ast.walk(tree) if isinstance(node, ast.Call) and _is_model_call(node)
    ]
    for call in model_calls:
        arguments = [*call.args, *(keyword.value for keyword in call.keywords)]
        fed |= {name for argument in arguments for name in _names_in(argument) if name in batches}
    return {name: batches[name] for name in fed}


@pytest.mark.parametrize("number", CHAPTER_NUMBERS, ids=lambda number: f"chapter_{number}")
def test_chapter_moves_each_collated_batch_it_feeds_to_the_model_to_the_model_device(number):
    for name, expression in _fed_collator_batches(_chapter_source(number)).items():
        assert _moves_to_a_device(expression), (
            f"chapter {number}: `{name}` comes from a collator (CPU tensors) and reaches the model "
            "unmoved; build it as {key: value.to(model.device) for key, value in batch.items()}"
        )


def test_fed_batch_check_finds_the_chapter_05_timing_batch():
    assert "batch" in _fed_collator_batches(_chapter_source("05"))  # the check above is not vacuous


def test_chapter_05_timing_batch_lands_on_the_model_device():
    """Run chapter 5's own statement with a collator making CPU tensors and a model on `meta`."""
    statement = next(
        node
        for node in ast.walk(ast.parse(_chapter_source("05")))
        if isinstance(node, ast.Assign) and _assigns(node, "batch")
    )
    cpu_batch = {
        "input_ids": torch.zeros(2, 5, dtype=torch.long),
        "labels": torch.full((2, 5), -100),
    }
    namespace: dict[str, Any] = {
        "trainer": SimpleNamespace(data_collator=lambda records: dict(cpu_batch)),
        "model": SimpleNamespace(device=torch.device("meta")),
        "timing_records": [{}, {}],
    }
    exec(compile(ast.Module([statement], type_ignores=[]), "chapter 05", "exec"), namespace)
    assert {value.device.type for value in namespace["batch"].values()} == {"meta"}


# --- the full profile's budgets, by the arithmetic of book/costs.md ------------------------------


def _read_constants() -> dict[str, float]:
    """Return the constants table of book/costs.md: the rows whose first cell is a `name`."""
    rows = re.findall(r"^\| `(\w+)` \| ([0-9.e+-]+) \|", COSTS_PAGE.read_text(), flags=re.MULTILINE)
    return {name: float(value) for name, value in rows}


COSTS = _read_constants()


def _full_value(source: str, name: str) -> Any:
    """Return the full value of `name = {"tiny": ..., "full": ...}[...]`, or of `name = literal`."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assign):
            continue
        if _assigns(node, name):
            value = node.value.value if isinstance(node.value, ast.Subscript) else node.value
            if isinstance(value, ast.Dict):
                entries = dict(zip((key.value for key in value.keys), value.values))
                return ast.literal_eval(entries["full"])
            return ast.literal_eval(value)
    raise AssertionError(f"no assignment to {name!r} in the chapter")


def _budget(number: str) -> list[str]:
    return _full_value(_chapter_source(number), "budget")


@dataclass
class Cell:
    """One notebook cell's GPU work under full."""

    name: str
    num_loads: int = 0  # loading the 2B model, or saving the merged one
    num_trained: int = 0  # examples through forward, backward and checkpoint recompute
    num_forwards: int = 0  # examples through a forward pass only
    answer_batches: list[tuple[int, int]] = field(default_factory=list)  # (answers, max new tokens)

    @property
    def num_answers(self) -> int:
        return sum(size for size, _ in self.answer_batches)

    def seconds(self, gpu: str) -> float:
        sustained_flops = COSTS[f"{gpu}_peak_tflops"] * 1e12 * COSTS["utilisation"]
        lm_flops = COSTS["lm_parameters"] * COSTS["tokens_per_example"]
        vision_flops = 2 * COSTS["vision_parameters"] * COSTS["patches_per_example"]
        train_flops = COSTS["training_flops_per_lm_parameter"] * lm_flops + vision_flops
        train_seconds = train_flops / sustained_flops
        forward_seconds = (2 * lm_flops + vision_flops) / sustained_flops
        answer_seconds = sum(
            size * forward_seconds + max_new_tokens * COSTS[f"{gpu}_decode_step_s"]
            for size, max_new_tokens in self.answer_batches
        )
        return (
            self.num_loads * COSTS["model_load_s"]
            + self.num_trained * train_seconds
            + self.num_forwards * forward_seconds
            + answer_seconds
        )


def _answer(num_answers: int, batch_size: int, max_new_tokens: int) -> list[tuple[int, int]]:
    """Return the generate batches of `num_answers` answers; each runs to its longest."""
    return [
        (min(batch_size, num_answers - start), max_new_tokens)
        for start in range(0, num_answers, batch_size)
    ]


def _num_steps(config: Config) -> int:
    training = config.training
    if training.max_steps > 0:
        return training.max_steps
    batches_per_epoch = math.ceil(NUM_TRAIN_IMAGES / training.per_device_train_batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / training.gradient_accumulation_steps)
    return math.ceil(training.num_train_epochs * steps_per_epoch)


def _num_trained(config: Config, num_steps: int) -> int:
    training = config.training
    if training.max_steps > 0:
        return num_steps * _examples_per_step(config)
    return round(training.num_train_epochs * NUM_TRAIN_IMAGES)


def _examples_per_step(config: Config) -> int:
    return config.training.per_device_train_batch_size * config.training.gradient_accumulation_steps


def _num_evaluations(num_steps: int, every_steps: int) -> int:
    """Evaluations by a callback that runs before step 1, every `every_steps` and at the end."""
    return 1 + num_steps // every_steps + (num_steps % every_steps > 0)


def _training_cell(
    name: str, config: Config, num_loads: int = 1, answer_loss_records: int = 0
) -> Cell:
    """A cell that loads a model and trains it as `config` says, with the config's IoU callback."""
    num_steps = _num_steps(config)
    cell = Cell(name, num_loads=num_loads, num_trained=_num_trained(config, num_steps))
    callbacks = config.callbacks
    if callbacks.iou_eval and callbacks.iou_eval_every_steps > 0:
        for _ in range(_num_evaluations(num_steps, callbacks.iou_eval_every_steps)):
            cell.answer_batches += _answer(
                min(callbacks.iou_eval_num_samples, NUM_VAL_IMAGES),
                config.training.per_device_eval_batch_size,
                callbacks.max_new_tokens,
            )
    if answer_loss_records:  # chapter 4's AnswerLossCallback: a forward per record per logging step
        num_measurements = _num_evaluations(num_steps, config.training.logging_steps)
        cell.num_forwards = answer_loss_records * num_measurements
    return cell


def _evaluation_answers(
    config: Config, num_images: int, num_models: int = 2
) -> list[tuple[int, int]]:
    batch_size = config.training.per_device_eval_batch_size
    return num_models * _answer(num_images, batch_size, config.callbacks.max_new_tokens)


def _merge_cell(config: Config, num_check_records: int) -> Cell:
    """`merging.merge_lora`: load the bf16 base, answer before and after merging, save."""
    answers = _answer(num_check_records, GENERATE_BATCH_SIZE, config.callbacks.max_new_tokens)
    return Cell("merge", num_loads=2, num_forwards=2, answer_batches=2 * answers)


def _chapter_00() -> list[Cell]:
    source = _chapter_source("00")
    config = load_config("assistant_only", profile="full", overrides=_full_value(source, "budget"))
    max_new_tokens = config.callbacks.max_new_tokens
    num_eval = _full_value(source, "num_eval_images")
    num_check_records = int(re.search(r"num_check_records=(\d+)", source).group(1))
    zero_shot = _answer(1, GENERATE_BATCH_SIZE, max_new_tokens)
    return [
        Cell("load and zero-shot", num_loads=1, answer_batches=zero_shot),
        _training_cell("train", config, num_loads=0),  # trains the model loaded above
        Cell("evaluate", num_loads=1, answer_batches=_evaluation_answers(config, num_eval)),
        _merge_cell(config, num_check_records),
    ]


def _chapter_02() -> list[Cell]:
    pattern = r"eval_records = \[splits\[\"eval\"\]\[index\] for index in range\((\d+)\)\]"
    num_answers = int(re.search(pattern, _chapter_source("02")).group(1))
    max_new_tokens = load_config(profile="full").callbacks.max_new_tokens
    return [
        Cell("load", num_loads=1),
        Cell(
            "zero-shot answers",
            answer_batches=_answer(num_answers, GENERATE_BATCH_SIZE, max_new_tokens),
        ),
    ]


def _chapter_04() -> list[Cell]:
    source = _chapter_source("04")
    strategies = _full_value(source, "STRATEGIES")
    assert len(strategies) == 2 and source.count("train_with_strategy(") == 3  # def, cell per run
    configs = [
        load_config(strategy, profile="full", overrides=_budget("04")) for strategy in strategies
    ]
    num_heldout = configs[0].callbacks.iou_eval_num_samples
    cells = [
        _training_cell(f"train {strategy}", config, answer_loss_records=num_heldout)
        for strategy, config in zip(strategies, configs)
    ]
    num_eval = min(_full_value(source, "num_eval_images"), NUM_VAL_IMAGES)
    return [*cells, Cell("evaluate", answer_batches=_evaluation_answers(configs[0], num_eval))]


def _chapter_05_config() -> Config:
    return load_config("assistant_only", profile="full", overrides=_budget("05"))


def _chapter_05() -> list[Cell]:
    config = _chapter_05_config()
    num_steps, save_steps = _num_steps(config), config.training.save_steps
    # The resume starts from the checkpoint before the last one.
    resumed_steps = num_steps - (num_steps - 1) // save_steps * save_steps
    num_timing_records = _full_value(_chapter_source("05"), "num_timing_records")
    return [
        Cell("load and LoRA", num_loads=1),
        Cell("loss timing", num_trained=2 * num_timing_records),
        _training_cell("train", config),
        Cell("resume", num_loads=1, num_trained=resumed_steps * _examples_per_step(config)),
    ]


def _chapter_06_config() -> Config:
    return load_config("assistant_only", profile="full", overrides=_budget("06"))


def _chapter_06(reuses_chapter_05: bool = True) -> list[Cell]:
    config = _chapter_06_config()
    num_eval = min(config.data.num_eval or NUM_VAL_IMAGES, NUM_VAL_IMAGES)
    num_check_records = _full_value(_chapter_source("06"), "num_merge_check_records")
    if reuses_chapter_05:
        model = Cell("load chapter 5's run", num_loads=1)
    else:
        model = _training_cell("train", config)
    return [
        model,
        Cell("load base", num_loads=1),
        Cell("evaluate", answer_batches=_evaluation_answers(config, num_eval)),
        _merge_cell(config, num_check_records),
    ]


def _book() -> dict[str, list[Cell]]:
    """Every chapter's cells under full; chapters 1 and 3 load no model: their time is constant."""
    return {
        "00": _chapter_00(),
        "01": [],
        "02": _chapter_02(),
        "03": [],
        "04": _chapter_04(),
        "05": _chapter_05(),
        "06": _chapter_06(),
    }


def _chapter_seconds(number: str, cells: list[Cell], gpu: str) -> float:
    fixed = COSTS.get(f"chapter_{number}_s", 0.0)
    return COSTS["page_overhead_s"] + fixed + sum(cell.seconds(gpu) for cell in cells)


def _book_minutes(book: dict[str, list[Cell]], gpu: str) -> float:
    return sum(_chapter_seconds(number, cells, gpu) for number, cells in book.items()) / 60


def _costs_table_rows() -> dict[str, list[str]]:
    """Return the per-chapter table of book/costs.md: {"00": [cell, ...], "whole book": [...]}."""
    pattern = r"^\| (\d\d|whole book)[^|]*\|(.*)\|$"
    rows = re.findall(pattern, COSTS_PAGE.read_text(), flags=re.MULTILINE)
    return {key: [cell.strip().replace(",", "") for cell in rest.split("|")] for key, rest in rows}


def _counts(cells: list[Cell]) -> list[str]:
    """Return [examples trained, answers generated] as the costs page writes them."""
    return [
        str(sum(cell.num_trained for cell in cells)),
        str(sum(cell.num_answers for cell in cells)),
    ]


def test_costs_page_has_every_constant_the_estimate_uses():
    needed = {
        "lm_parameters",
        "training_flops_per_lm_parameter",
        "vision_parameters",
        "tokens_per_example",
        "patches_per_example",
        "utilisation",
        "model_load_s",
        "page_overhead_s",
        "chapter_01_s",
        "chapter_03_s",
        *(f"{gpu}_{name}" for gpu in GPUS for name in ("peak_tflops", "decode_step_s")),
    }
    assert needed <= set(COSTS), f"book/costs.md lacks {sorted(needed - set(COSTS))}"


def test_full_book_builds_within_45_minutes_on_an_l4():
    minutes = _book_minutes(_book(), "l4")
    assert minutes <= BOOK_LIMIT_MINUTES, f"the full book takes an estimated {minutes:.1f} min"


@pytest.mark.parametrize(
    "reuses_chapter_05", [True, False], ids=["chapter_06_reuses_chapter_05", "chapter_06_trains"]
)
def test_every_full_cell_fits_the_cell_timeout_on_an_l4(reuses_chapter_05):
    book = {**_book(), "06": _chapter_06(reuses_chapter_05)}
    limit = float(yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]["timeout"])
    too_long = {
        f"chapter {number}, {cell.name}": round(cell.seconds("l4"))
        for number, cells in book.items()
        for cell in cells
        if cell.seconds("l4") > limit
    }
    assert not too_long, f"estimated seconds on an L4 above the {limit:.0f} s limit: {too_long}"


def test_chapter_06_full_recipe_is_chapter_05_so_its_run_is_reused():
    source = _chapter_source("06")
    function = next(
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name == "describe_recipe"
    )
    namespace: dict[str, Any] = {}
    exec(
        "from vlmlib.config import Config, config_to_dict, with_overrides\n"
        + ast.get_source_segment(source, function),
        namespace,
    )
    describe_recipe = namespace["describe_recipe"]
    assert _full_value(source, "earlier_run") == "outputs/chapter05"
    assert describe_recipe(_chapter_06_config()) == describe_recipe(_chapter_05_config())
    whole_recipe = load_config("assistant_only", profile="full")
    assert describe_recipe(_chapter_06_config()) != describe_recipe(whole_recipe)


def test_cli_full_config_stays_the_whole_recipe():
    training = load_config(profile="full").training
    assert (training.max_steps, training.num_train_epochs) == (-1, 3)  # pages cap steps themselves


@pytest.mark.parametrize("number", BUDGETED_CHAPTERS, ids=lambda number: f"chapter_{number}")
def test_costs_page_row_matches_the_chapter_budget(number):
    cells = _book()[number]
    # columns: examples trained | answers | L4 min | A100 min | longest cell on the L4 | peak | card
    minutes = [str(math.ceil(_chapter_seconds(number, cells, gpu) / 60)) for gpu in GPUS]
    expected = [
        *_counts(cells),
        *minutes,
        str(math.ceil(max(cell.seconds("l4") for cell in cells) / 60)),
    ]
    assert _costs_table_rows()[number][:5] == expected


def test_costs_page_whole_book_row_adds_up_the_chapters():
    book = _book()
    cells = [cell for chapter in book.values() for cell in chapter]
    expected = [*_counts(cells), *(str(math.ceil(_book_minutes(book, gpu))) for gpu in GPUS)]
    assert _costs_table_rows()["whole book"][:4] == expected


@pytest.mark.parametrize("number", BUDGETED_CHAPTERS, ids=lambda number: f"chapter_{number}")
def test_chapter_note_states_the_costs_page_estimate(number):
    l4_minutes, a100_minutes, longest_minutes, _, card_gb = _costs_table_rows()[number][2:7]
    note = _one_line(_chapter_source(number))
    assert f"about {l4_minutes} minutes on an NVIDIA L4 and {a100_minutes} on an" in note
    assert f"about {longest_minutes} minute" in note and f"a card of {card_gb} GB or more" in note
    assert int(card_gb) <= LARGEST_CARD_GB


def test_chapter_06_note_states_its_time_when_it_must_train():
    minutes = math.ceil(_chapter_seconds("06", _chapter_06(reuses_chapter_05=False), "l4") / 60)
    assert f"({minutes} on the L4 when the page trains)" in _one_line(_chapter_source("06"))
    assert f"takes about {minutes} minutes on an L4 instead of" in _one_line(COSTS_PAGE.read_text())
