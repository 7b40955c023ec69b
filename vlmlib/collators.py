"""Collators: turn dataset records into a training batch, and decide which tokens the loss sees.

Why: the `labels` tensor is the whole of what fine-tuning teaches. Every position left at its token
id is a token the model is trained to predict; every -100 is ignored. The three versions below are
the course's story of getting that right.
Explained in: chapter 03, "Collators: deciding what the model learns".

| version      | trains on                             | what it fixes                       |
| ------------ | ------------------------------------- | ----------------------------------- |
| `CollatorV1` | every position: padding, images, text | nothing: the naive starting point   |
| `CollatorV2` | system, user and answer text          | no loss on padding and image tokens |
| `CollatorV3` | answer and `<|im_end|>`, or all text  | no loss on the prompt; checks input |

V3 trains on the answer alone or on all text as its `mask_strategy` says (`assistant_only` or
`all_tokens`).

All three take a list of records in the Hub schema and return a dict with `input_ids` (batch,
seq_len), `attention_mask` (batch, seq_len), `pixel_values` (total_patches, 1176), `image_grid_thw`
(num_images, 3) and `labels` (batch, seq_len), plus `mm_token_type_ids` when the processor makes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from qwen_vl_utils import fetch_image, process_vision_info
from transformers import Qwen2VLProcessor

from vlmlib.data import DEFAULT_PROMPT, DEFAULT_SYSTEM_MESSAGE, build_conversation, format_answer
from vlmlib.models import get_pixel_budget
from vlmlib.tokens import IM_END_TOKEN, IM_START_TOKEN, VISION_TOKENS

__all__ = [
    "IGNORE_INDEX",
    "TOKEN_ROLES",
    "CollatorV1",
    "CollatorV2",
    "CollatorV3",
    "MaskStrategy",
    "build_collator",
    "find_answer_mask",
    "find_token_roles",
]

IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy skips
MaskStrategy = Literal["assistant_only", "all_tokens"]


class CollatorV1:
    """Trains on every position: labels are a plain copy of `input_ids`.

    Why: the simplest thing that runs. It also trains the model to predict padding, hundreds of
    `<|image_pad|>` placeholders and the user's prompt, which wastes most of the loss on tokens it
    will never have to write.
    Explained in: chapter 03, "V1: copy the input".

    Args:
        processor: the Qwen2-VL processor (its pixel budget is used for every image).
        prompt, system_message: the instruction text of every conversation.
        padding_side: "right" for training (the default); "left" works too, and the tests use both.
    """

    def __init__(
        self,
        processor: Qwen2VLProcessor,
        prompt: str = DEFAULT_PROMPT,
        system_message: str = DEFAULT_SYSTEM_MESSAGE,
        padding_side: Literal["right", "left"] = "right",
    ):
        self.processor = processor
        self.prompt = prompt
        self.system_message = system_message
        self.padding_side = padding_side

    def encode(self, records: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Return the processor's batch for full conversations (prompt and
        answer), padded on `padding_side`.
        """
        if not records:
            raise ValueError(
                f"{type(self).__name__} got an empty batch; check the dataset is not "
                "empty after cleaning"
            )
        min_pixels, max_pixels = get_pixel_budget(self.processor)
        conversations = [
            build_conversation(
                record,
                self.prompt,
                self.system_message,
                min_pixels=min_pixels,
                max_pixels=max_pixels,
            )
            for record in records
        ]
        texts = [
            self.processor.apply_chat_template(conversation, tokenize=False)
            for conversation in conversations
        ]
        images, _ = process_vision_info(conversations)
        return dict(
            self.processor(
                text=texts,
                images=images,
                padding=True,
                padding_side=self.padding_side,
                return_tensors="pt",
            )
        )

    def __call__(self, records: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.encode(records)
        batch["labels"] = batch["input_ids"].clone()
        return batch


class CollatorV2(CollatorV1):
    """Trains on text only: system, user and answer tokens; padding and vision tokens are -100.

    Differs from V1: masks padding (`attention_mask == 0`) and `<|vision_start|>`, `<|vision_end|>`,
    `<|image_pad|>`, as the Hugging Face cookbook's Qwen2-VL collator does. TRL 1.16's
    `DataCollatorForVisionLanguageModeling` masks only padding (plus the prompt with
    `completion_only_loss`, or all but the assistant's turns with `assistant_only_loss`), so on
    conversational data it trains on the vision tokens. V2 still trains on the system and user
    text, which is the same in every example, so part of the loss teaches the model to recite the
    prompt.
    Explained in: chapter 03, "V2: mask padding and the image".
    """

    def __init__(
        self,
        processor: Qwen2VLProcessor,
        prompt: str = DEFAULT_PROMPT,
        system_message: str = DEFAULT_SYSTEM_MESSAGE,
        padding_side: Literal["right", "left"] = "right",
    ):
        super().__init__(processor, prompt, system_message, padding_side)
        self.vision_token_ids = torch.tensor(
            processor.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
        )

    def mask_padding_and_vision(
        self, batch: dict[str, torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        """Set labels to -100 at padding and vision-token positions, in place, and return them."""
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        labels[torch.isin(batch["input_ids"], self.vision_token_ids)] = IGNORE_INDEX
        return labels

    def __call__(self, records: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.encode(records)
        batch["labels"] = self.mask_padding_and_vision(batch, batch["input_ids"].clone())
        return batch


def find_answer_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    im_start_id: int,
    im_end_id: int,
    assistant_header_ids: Sequence[int],
) -> torch.Tensor:
    """Return a bool mask, True on every assistant answer token and the `<|im_end|>` that closes it.

    Why: the answer's position is found in the *processed* ids, after each `<|image_pad|>` has been
    expanded into many; measuring the prompt with the tokenizer alone sees one placeholder and ends
    the mask too early, leaving part of the prompt in the loss.
    Explained in: chapter 03, "V3: learn from the answer only"; lab 03.

    Args:
        input_ids: (batch, seq_len) int64 from the processor.
        attention_mask: (batch, seq_len), 1 on real tokens; padding may be on either side.
        assistant_header_ids: the ids after `<|im_start|>` that open an
            assistant turn ("assistant", "\\n").
    Returns:
        (batch, seq_len) bool. The header itself (`<|im_start|>assistant\\n`) is not in the mask.
    Raises:
        ValueError: an assistant turn has no closing `<|im_end|>` (the answer
            was cut off), naming the example.
    """
    is_start = (input_ids == im_start_id) & (attention_mask == 1)
    is_end = (input_ids == im_end_id) & (attention_mask == 1)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    turn_number = is_start.cumsum(dim=1)  # which turn each position is in (1 = the first turn)
    turn_start = torch.where(is_start, positions, torch.zeros_like(positions)).cummax(dim=1).values
    ends_before = (
        is_end.cumsum(dim=1) - is_end.long()
    )  # <|im_end|> tokens strictly before each position
    header_length = len(assistant_header_ids)
    is_assistant_start = is_start.clone()
    for offset, token_id in enumerate(assistant_header_ids, start=1):
        shifted = torch.full_like(input_ids, -1)
        shifted[:, :-offset] = input_ids[:, offset:]
        is_assistant_start &= shifted == token_id
    # A position belongs to an assistant turn if the turn's opening <|im_start|>
    # is an assistant header.
    turn_is_assistant = torch.gather(is_assistant_start, 1, turn_start) & (turn_number > 0)
    inside_turn = ends_before < turn_number  # up to and including the turn's own <|im_end|>
    mask = (
        turn_is_assistant
        & inside_turn
        & (positions >= turn_start + header_length + 1)
        & (attention_mask == 1)
    )
    num_assistant_turns = is_assistant_start.sum(dim=1)
    num_closed_turns = (is_end & turn_is_assistant & inside_turn).sum(dim=1)
    for index in torch.nonzero(num_closed_turns < num_assistant_turns).flatten().tolist():
        raise ValueError(
            f"example {index} of {input_ids.shape[0]}: an assistant answer has no closing "
            f"{IM_END_TOKEN} (cut off by truncation?). Training on half an answer teaches "
            "the model to stop early; raise max_length or drop the example."
        )
    return mask


class CollatorV3(CollatorV2):
    """Trains on the answer and its closing `<|im_end|>` (`assistant_only`), or
    on all text (`all_tokens`).

    Differs from V2: with `assistant_only`, the system and user text are -100 too, so every unit of
    loss comes from what the model must write. The answer is found on the processed ids (after image
    expansion) in one vectorised pass. It checks its input and stops with a clear error on an empty
    batch, a record without an image, a record with no boxes, an example longer than
    `max_length`, or an answer with no closing `<|im_end|>`; it never trains on half an answer.
    Explained in: chapter 03, "V3: learn from the answer only", and chapter 04
    (the two strategies compared).

    Args:
        mask_strategy: "assistant_only" (the course's choice) or "all_tokens"
            (V2's labels, with V3's checks).
        max_length: the longest example allowed, in tokens; None for no limit. Examples are never
            cut, because a cut can split the image's tokens from its pixels or leave half an answer.
    """

    def __init__(
        self,
        processor: Qwen2VLProcessor,
        prompt: str = DEFAULT_PROMPT,
        system_message: str = DEFAULT_SYSTEM_MESSAGE,
        padding_side: Literal["right", "left"] = "right",
        mask_strategy: MaskStrategy = "assistant_only",
        max_length: int | None = None,
    ):
        super().__init__(processor, prompt, system_message, padding_side)
        if mask_strategy not in ("assistant_only", "all_tokens"):
            raise ValueError(
                f"mask_strategy {mask_strategy!r} is not one of ['assistant_only', 'all_tokens']"
            )
        self.mask_strategy = mask_strategy
        self.max_length = max_length
        tokenizer = processor.tokenizer
        self.im_start_id = tokenizer.convert_tokens_to_ids(IM_START_TOKEN)
        self.im_end_id = tokenizer.convert_tokens_to_ids(IM_END_TOKEN)
        self.assistant_header_ids = tokenizer.encode("assistant\n", add_special_tokens=False)
        # The system and user turns are identical in every example: render them
        # through the chat template once.
        placeholder = {"image": None, "objects": {"bbox": [], "category_name": []}}
        self.prompt_text = processor.apply_chat_template(
            build_conversation(placeholder, prompt, system_message, include_answer=False),
            tokenize=False,
            add_generation_prompt=True,
        )

    def encode(self, records: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Return the same batch as V1's `encode`, rendering the shared prompt
        once instead of per example.

        Why: the chat template is about a tenth of a collator's time; the text is the template's own
        output (prompt + answer + `<|im_end|>\\n`), and a test checks the ids equal V1's.
        """
        min_pixels, max_pixels = get_pixel_budget(self.processor)
        texts = [
            self.prompt_text + format_answer(record["objects"]) + IM_END_TOKEN + "\n"
            for record in records
        ]
        images = [
            fetch_image(
                {"image": record["image"], "min_pixels": min_pixels, "max_pixels": max_pixels}
            )
            for record in records
        ]
        return dict(
            self.processor(
                text=texts,
                images=images,
                padding=True,
                padding_side=self.padding_side,
                return_tensors="pt",
            )
        )

    def check_records(self, records: Sequence[dict[str, Any]]) -> None:
        """Raise ValueError naming the first record that cannot make a training example."""
        if not records:
            raise ValueError(
                "CollatorV3 got an empty batch; check the dataset is not empty after cleaning"
            )
        for index, record in enumerate(records):
            where = (
                f"CollatorV3 got example {index} of {len(records)} (image_id "
                f"{record.get('image_id')!r})"
            )
            if record.get("image") is None:
                raise ValueError(
                    f"{where} with no image. Each example needs one image; drop bad "
                    "records first (chapter 01)."
                )
            if not record.get("objects", {}).get("bbox"):
                raise ValueError(
                    f"{where} with no boxes, so there is no answer to learn; clean the "
                    "split first (chapter 01)."
                )

    def __call__(self, records: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        self.check_records(records)
        batch = self.encode(records)
        lengths = batch["attention_mask"].sum(dim=1)
        if self.max_length is not None and int(lengths.max()) > self.max_length:
            index = int(lengths.argmax())
            raise ValueError(
                f"example {index} of {len(records)} is {int(lengths[index])} tokens, longer than "
                f"max_length={self.max_length}; lower model.max_pixels or raise max_length"
            )
        labels = self.mask_padding_and_vision(batch, batch["input_ids"].clone())
        answer_mask = find_answer_mask(
            batch["input_ids"],
            batch["attention_mask"],
            self.im_start_id,
            self.im_end_id,
            self.assistant_header_ids,
        )  # also checks no answer is cut
        if self.mask_strategy == "assistant_only":
            labels[~answer_mask] = IGNORE_INDEX
        batch["labels"] = labels
        return batch


def build_collator(
    version: Literal["v1", "v2", "v3"],
    processor: Qwen2VLProcessor,
    prompt: str = DEFAULT_PROMPT,
    system_message: str = DEFAULT_SYSTEM_MESSAGE,
    mask_strategy: MaskStrategy = "assistant_only",
) -> CollatorV1:
    """Return the collator a config names (`training.collator`, `training.mask_strategy`).

    V1 and V2 have no strategy: asking them for `assistant_only` is an error, not a silent no-op.
    """
    if version == "v3":
        return CollatorV3(processor, prompt, system_message, mask_strategy=mask_strategy)
    if mask_strategy != "all_tokens":
        raise ValueError(
            f"collator {version} cannot mask the prompt; use training.collator=v3 for "
            f"mask_strategy={mask_strategy!r}, or set training.mask_strategy=all_tokens"
        )
    return {"v1": CollatorV1, "v2": CollatorV2}[version](processor, prompt, system_message)


TOKEN_ROLES: tuple[str, ...] = ("padding", "vision", "system", "user", "assistant")


def find_token_roles(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer
) -> list[list[str]]:
    """Return the role of every position: padding, vision, or the turn it
    belongs to (system, user, assistant).

    Why: to count what each collator trains on, category by category (chapter 03's table, lab 04).
    A turn's role is the word after its `<|im_start|>`; the header and the closing
    `<|im_end|>` belong to the turn; the newline between turns belongs to the turn it follows.
    Explained in: chapter 03, "What each version trains on".

    Args:
        input_ids, attention_mask: (batch, seq_len) from a collator.
    Returns:
        batch lists of seq_len strings from `TOKEN_ROLES`.
    """
    im_start_id = tokenizer.convert_tokens_to_ids(IM_START_TOKEN)
    vision_ids = set(tokenizer.convert_tokens_to_ids(list(VISION_TOKENS)))
    role_by_id = {
        tokenizer.encode(role, add_special_tokens=False)[0]: role
        for role in ("system", "user", "assistant")
    }
    roles: list[list[str]] = []
    for row_ids, row_mask in zip(input_ids.tolist(), attention_mask.tolist()):
        row_roles, current = [], "system"
        for position, (token_id, is_real) in enumerate(zip(row_ids, row_mask)):
            if is_real and token_id == im_start_id and position + 1 < len(row_ids):
                current = role_by_id.get(row_ids[position + 1], current)
            row_roles.append(
                "padding" if not is_real else "vision" if token_id in vision_ids else current
            )
        roles.append(row_roles)
    return roles
