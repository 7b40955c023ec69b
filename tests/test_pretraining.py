"""The tiny model's pretraining (`vlmlib.tiny.pretraining`) and its data
(`generate_pretraining_records`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmlib.boxes import convert_hub_box_to_xyxy
from vlmlib.collators import IGNORE_INDEX, CollatorV3
from vlmlib.config import with_overrides
from vlmlib.data import format_answer
from vlmlib.models import load_model
from vlmlib.tiny import ensure_tiny_assets, tiny_model_dir
from vlmlib.tiny.pretraining import (
    PRETRAINING_PROMPT,
    PretrainingSettings,
    compute_sampled_softmax_loss,
    patch_embedding_as_matmul,
    pretrain,
    resize_images_once,
)
from vlmlib.tiny.synthetic import (
    BOX_COUNT_RATES,
    LOGO_CATEGORY_NAME,
    generate_pretraining_records,
    generate_synthetic_dataset,
)
from vlmlib.training import compute_answer_loss


@pytest.fixture(scope="module")
def pretraining_records() -> list[dict]:
    return generate_pretraining_records(24, seed=3, is_square=True)


def test_pretraining_records_box_the_tables_then_the_visible_logo(pretraining_records):
    with_logo = [
        record
        for record in pretraining_records
        if LOGO_CATEGORY_NAME in record["objects"]["category_name"]
    ]
    assert (
        len(with_logo) >= len(pretraining_records) // 2
    )  # tables hide more than half of a logo only now and then
    for record in pretraining_records:
        assert record["width"] == record["height"]
        names = record["objects"]["category_name"]
        assert LOGO_CATEGORY_NAME not in names[:-1]  # the logo, when boxed, comes last
    record = with_logo[0]
    x1, y1, x2, y2 = (
        round(value)
        for value in convert_hub_box_to_xyxy(
            record["objects"]["bbox"][-1], record["width"], record["height"]
        )
    )
    pixels = np.asarray(record["image"]).astype(int)
    assert (
        pixels[y1:y2, x1:x2].std(axis=(0, 1)).max() > 10
    )  # the box holds the logo's edge, not plain background
    assert f"{LOGO_CATEGORY_NAME}<|object_ref_end|>" in format_answer(record["objects"])


def test_pretraining_records_hold_as_many_tables_as_the_dataset_does():
    # Labels with more tables than the dataset's made the pretrained model
    # invent boxes: book/tiny_model.md.
    records = generate_pretraining_records(300, seed=4, min_side_px=64, max_side_px=64)
    counts = [
        sum(name != LOGO_CATEGORY_NAME for name in record["objects"]["category_name"])
        for record in records
    ]
    for (
        num_tables,
        rate,
    ) in BOX_COUNT_RATES.items():  # 300 labels: 0.08 is over three standard errors of a rate
        assert abs(counts.count(num_tables) / len(counts) - rate) < 0.08, f"{num_tables} tables"


def test_pretraining_records_keep_the_dataset_images_unchanged():
    square = generate_synthetic_dataset(num_train=2, num_val=0, seed=5, is_square=True)["train"]
    again = generate_synthetic_dataset(num_train=2, num_val=0, seed=5, is_square=True)["train"]
    assert square[0]["width"] == square[0]["height"]
    assert np.array_equal(np.asarray(square[1]["image"]), np.asarray(again[1]["image"]))
    assert LOGO_CATEGORY_NAME not in square[0]["objects"]["category_name"]


def test_resizing_images_once_leaves_the_batches_unchanged(tiny_processor, pretraining_records):
    collator = CollatorV3(tiny_processor, PRETRAINING_PROMPT)
    resized = resize_images_once(pretraining_records[:4], tiny_processor)
    assert (
        resized[0]["image"].size != pretraining_records[0]["image"].size
    )  # the fixture's sides are not the budget's
    expected, actual = collator(pretraining_records[:4]), collator(resized)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_pretraining_answers_start_where_the_course_answers_start(
    tiny_config, tiny_processor, pretraining_records
):
    # The tiny model reads a table's row from the answer's distance to the image
    # (book/tiny_model.md, point 8).
    pretraining_batch = CollatorV3(
        tiny_processor, PRETRAINING_PROMPT, tiny_config.data.system_message
    )(pretraining_records[:2])
    course_batch = CollatorV3(
        tiny_processor, tiny_config.data.prompt, tiny_config.data.system_message
    )(pretraining_records[:2])
    assert PRETRAINING_PROMPT != tiny_config.data.prompt
    first_answer_index = [
        int((batch["labels"][0] != IGNORE_INDEX).nonzero()[0])
        for batch in (pretraining_batch, course_batch)
    ]
    assert first_answer_index[0] == first_answer_index[1]


def test_sampled_softmax_over_the_whole_vocabulary_equals_the_answer_loss(
    tiny_config, tiny_processor, tiny_splits
):
    model = load_model(tiny_config).eval()
    batch = CollatorV3(tiny_processor)([tiny_splits["train"][index] for index in range(3)])
    with torch.no_grad():
        exact = compute_answer_loss(model, batch)
        whole_vocabulary = compute_sampled_softmax_loss(model, batch, num_sampled_negatives=None)
        sampled = compute_sampled_softmax_loss(model, batch, num_sampled_negatives=256)
    assert torch.allclose(whole_vocabulary, exact, rtol=1e-5)
    assert sampled < exact  # fewer competitors: a smaller loss, the price of a cheaper step


def test_patch_embedding_as_matmul_equals_the_conv3d_then_restores_it(
    tiny_config, tiny_processor, tiny_splits
):
    patch_embed = load_model(tiny_config).model.visual.patch_embed
    pixel_values = CollatorV3(tiny_processor)([tiny_splits["train"][0]])["pixel_values"]
    conv_output = patch_embed(pixel_values)
    (conv_gradient,) = torch.autograd.grad(conv_output.square().sum(), patch_embed.proj.weight)
    with patch_embedding_as_matmul(patch_embed):
        matmul_output = patch_embed(pixel_values)
        (matmul_gradient,) = torch.autograd.grad(
            matmul_output.square().sum(), patch_embed.proj.weight
        )
    assert torch.allclose(matmul_output, conv_output, atol=1e-5)
    assert (
        matmul_gradient - conv_gradient
    ).norm() < 1e-5 * conv_gradient.norm()  # sums of ~1,000 terms, in another order
    assert "forward" not in vars(patch_embed)  # the Conv3d forward is back


def test_pretrain_lowers_the_loss_and_leaves_a_dense_embedding(
    tiny_config, tiny_processor, pretraining_records
):
    model = load_model(tiny_config)
    settings = PretrainingSettings(
        num_steps=12, batch_size=4, learning_rate=3e-3, warmup_steps=2, log_every_steps=4
    )
    log = pretrain(
        model, tiny_processor, pretraining_records, settings, tiny_config.data.system_message
    )
    assert log.steps == [4, 8, 12]
    assert (
        log.losses[-1] < log.losses[0] - 1.0
    )  # from ~12 (a random 151,936-way guess) the format is learned fast
    assert not model.get_input_embeddings().sparse and not model.training


def test_pretrain_refuses_too_few_records(tiny_config, tiny_processor, pretraining_records):
    with pytest.raises(ValueError, match="at least batch_size=8 records"):
        pretrain(
            load_model(tiny_config),
            tiny_processor,
            pretraining_records[:3],
            PretrainingSettings(num_steps=1),
            tiny_config.data.system_message,
        )


def test_ensure_tiny_assets_saves_the_pretrained_model(tiny_config, tiny_assets):
    config = with_overrides(tiny_config, ["tiny.pretrain_steps=2", "tiny.pretrain_num_images=8"])
    model_dir, _ = ensure_tiny_assets(config)
    assert (
        model_dir == tiny_model_dir(config) != tiny_model_dir(tiny_config)
    )  # its own cache folder
    pretrained, random_init = load_model(config), load_model(tiny_config)
    for name, random_weight in random_init.named_parameters():
        if name.endswith(
            ("embed_tokens.weight", "patch_embed.proj.weight", "layers.0.self_attn.q_proj.weight")
        ):
            assert not torch.equal(pretrained.get_parameter(name), random_weight), name


def test_a_new_pretraining_question_gets_its_own_cache_folder(tiny_config):
    config = with_overrides(tiny_config, ["tiny.pretrain_steps=2"])
    assert tiny_model_dir(
        with_overrides(config, ["tiny.pretrain_prompt=Box every object."])
    ) != tiny_model_dir(config)
