"""Check the masking exercises: the trained share of each token role, the
answer's loss weight, loss by role.

Why: what a collator masks changes what the loss is made of; these checks compare the student's
numbers with references computed as chapter 03 does, on hand-made labels and logits and on real
batches through each collator.
Explained in: book/labs, lab 04 (exercises 4.1 to 4.3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vlmlib.checks.runner import CheckCase, CheckResult, run_check

__all__ = ["check_answer_loss_weight", "check_loss_share_by_role", "check_trained_fraction_by_role"]


def _reference_trained_fraction(roles: Sequence[Sequence[str]], labels: Any) -> dict[str, float]:
    """Return the share of the trained positions (label not -100) in each role,
    as chapter 03 counts them.
    """
    from collections import Counter

    from vlmlib.collators import IGNORE_INDEX, TOKEN_ROLES

    counts = Counter(
        role
        for row_roles, row_labels in zip(roles, labels.tolist())
        for role, label in zip(row_roles, row_labels)
        if label != IGNORE_INDEX
    )
    total = sum(counts.values())
    return {role: counts[role] / total for role in TOKEN_ROLES}


def check_trained_fraction_by_role(
    function: Callable[..., Any], processor: Any, records: Sequence[dict[str, Any]]
) -> CheckResult:
    """Check the share of trained positions per role against chapter 03's count
    (lab 04, exercise 4.1).

    Args:
        function: the student's `trained_fraction_by_role(roles, labels)`.
        processor, records: real cases are the records through CollatorV1, V2
            and V3 (both strategies).
    """
    import torch

    from vlmlib.collators import IGNORE_INDEX, CollatorV1, CollatorV2, CollatorV3, find_token_roles

    ignored = IGNORE_INDEX
    toy = {  # name -> (roles, labels, hint)
        "one row, everything trained": (
            [["system", "system", "user", "user", "assistant"]],
            [[1, 2, 3, 4, 5]],
            "return every role of TOKEN_ROLES as a key, 0.0 for roles with no trained position.",
        ),
        "one row, the prompt masked": (
            [["system", "user", "user", "assistant", "assistant"]],
            [[ignored, ignored, ignored, 7, 8]],
            "count only positions whose label is not -100.",
        ),
        "two rows of different lengths": (
            [["user", "assistant", "assistant", "padding"], ["user", "user", "user", "assistant"]],
            [[3, 4, 5, ignored], [3, 3, 3, 4]],
            "divide by the trained positions of the whole batch, not row by row.",
        ),
    }
    cases = [
        CheckCase(
            name,
            {"roles": roles, "labels": torch.tensor(labels)},
            _reference_trained_fraction(roles, torch.tensor(labels)),
            hint,
        )
        for name, (roles, labels, hint) in toy.items()
    ]
    collators = {
        "V1": (CollatorV1, {}),
        "V2": (CollatorV2, {}),
        "V3 all_tokens": (CollatorV3, {"mask_strategy": "all_tokens"}),
        "V3 assistant_only": (CollatorV3, {"mask_strategy": "assistant_only"}),
    }
    for name, (collator_class, options) in collators.items():
        batch = collator_class(processor, **options)(list(records))
        roles = find_token_roles(batch["input_ids"], batch["attention_mask"], processor.tokenizer)
        cases.append(
            CheckCase(
                f"{len(records)} real examples through {name}",
                {"roles": roles, "labels": batch["labels"]},
                _reference_trained_fraction(roles, batch["labels"]),
                None,
            )
        )
    return run_check(
        function,
        cases,
        hint=(
            "count the trained positions of each role, then divide each count by the "
            "total number trained."
        ),
    )


def _reference_answer_weight(labels_all_tokens: Any, labels_assistant_only: Any) -> float:
    """Return answer tokens / trained tokens over the batch, counting only
    predicted positions (1 onwards).
    """
    from vlmlib.collators import IGNORE_INDEX

    num_answer = int((labels_assistant_only[:, 1:] != IGNORE_INDEX).sum())
    return num_answer / int((labels_all_tokens[:, 1:] != IGNORE_INDEX).sum())


def check_answer_loss_weight(
    function: Callable[..., Any], processor: Any, records: Sequence[dict[str, Any]]
) -> CheckResult:
    """Check the weight of the answer in the all_tokens loss, relative to
    assistant_only (lab 04, exercise 4.2).

    Args:
        function: the student's `answer_loss_weight(labels_all_tokens, labels_assistant_only)`.
        processor, records: a real case is the records through CollatorV3 with each strategy.
    """
    import torch

    from vlmlib.collators import IGNORE_INDEX, CollatorV3

    ignored = IGNORE_INDEX
    toy = {  # name -> (labels_all_tokens, labels_assistant_only, hint)
        "one row: 3 answer tokens of 6 in the loss": (
            [[ignored, 6, 7, 8, 20, 21, 2]],
            [[ignored] * 4 + [20, 21, 2]],
            "weight = answer tokens in the loss / all tokens in the loss.",
        ),
        "the same labels: weight 1": (
            [[ignored, ignored, 20, 21, 2]],
            [[ignored, ignored, 20, 21, 2]],
            None,
        ),
        "rows of different lengths": (
            [[ignored, 6, 7, 20, 2, ignored, ignored], [ignored, 6, 7, 8, 9, 20, 2]],
            [[ignored, ignored, ignored, 20, 2, ignored, ignored], [ignored] * 5 + [20, 2]],
            (
                "the loss is one mean over all the batch's tokens: divide the two "
                "totals, do not average per-row ratios."
            ),
        ),
        "the first position is never predicted": (
            [[1, 6, 7, 20, 2]],
            [[ignored, ignored, ignored, 20, 2]],
            (
                "position 0 has no token before it, so its label never reaches the loss: "
                "count from position 1 (labels[:, 1:])."
            ),
        ),
    }
    cases = [
        CheckCase(
            name,
            {
                "labels_all_tokens": torch.tensor(all_tokens),
                "labels_assistant_only": torch.tensor(answer),
            },
            _reference_answer_weight(torch.tensor(all_tokens), torch.tensor(answer)),
            hint,
        )
        for name, (all_tokens, answer, hint) in toy.items()
    ]
    labels = {
        strategy: CollatorV3(processor, mask_strategy=strategy)(list(records))["labels"]
        for strategy in ("all_tokens", "assistant_only")
    }
    cases.append(
        CheckCase(
            f"{len(records)} real examples through CollatorV3",
            {
                "labels_all_tokens": labels["all_tokens"],
                "labels_assistant_only": labels["assistant_only"],
            },
            _reference_answer_weight(labels["all_tokens"], labels["assistant_only"]),
            None,
        )
    )
    return run_check(
        function,
        cases,
        hint="count labels != -100 from position 1 under each strategy; "
        "return the assistant_only count over the all_tokens count.",
    )


def _reference_loss_share(
    logits: Any, labels: Any, roles: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Return each role's share of the summed next-token cross-entropy (logits
    at t predict the label at t + 1).
    """
    import torch.nn.functional as F

    from vlmlib.collators import IGNORE_INDEX, TOKEN_ROLES

    targets = labels[:, 1:]
    token_losses = F.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    totals = {role: 0.0 for role in TOKEN_ROLES}
    for row, row_roles in enumerate(roles):
        for position in range(1, len(row_roles)):
            if int(labels[row, position]) != IGNORE_INDEX:
                totals[row_roles[position]] += float(token_losses[row, position - 1])
    total = sum(totals.values())
    return {role: value / total for role, value in totals.items()}


def check_loss_share_by_role(function: Callable[..., Any]) -> CheckResult:
    """Check each role's share of the loss, computed from logits with the
    next-token shift (lab 04, exercise 4.3).
    """
    import torch

    from vlmlib.collators import IGNORE_INDEX

    ignored, vocab_size = IGNORE_INDEX, 8
    generator = torch.Generator().manual_seed(0)
    prompt_roles = ["system", "system", "user", "user", "assistant", "assistant", "assistant"]
    prompt_labels = [1, 6, 7, 3, 5, 4, 2]

    def confident(labels: list[int], confident_positions: set[int]) -> Any:
        """Return (1, len, vocab) logits, random except very sure of the next
        label after each given position.
        """
        logits = torch.randn(1, len(labels), vocab_size, generator=generator)
        for position in confident_positions:
            logits[0, position, labels[position + 1]] = 12.0
        return logits

    uniform = torch.zeros(1, len(prompt_labels), vocab_size)
    shifted_trap = torch.zeros(1, 4, vocab_size)
    shifted_trap[0, 0, 5] = (
        12.0  # position 0 is sure of the token at position 1 (5): the user token costs little
    )
    toy = {  # name -> (logits, labels, roles, hint)
        "equal logits: every token costs the same": (
            uniform,
            [prompt_labels],
            [prompt_roles],
            (
                "with equal logits every predicted token costs log(vocab size), so the "
                "shares are those of positions 1 onwards: position 0 is never predicted."
            ),
        ),
        "a prompt the model is sure of": (
            confident(prompt_labels, {0, 1, 2}),
            [prompt_labels],
            [prompt_roles],
            (
                "a token's loss is -log_softmax(logits)[label]: use F.cross_entropy(..., "
                "reduction='none')."
            ),
        ),
        "the logits at t predict the token at t + 1": (
            shifted_trap,
            [[1, 5, 6, 7]],
            [["system", "user", "assistant", "assistant"]],
            (
                "shift by one: logits[:, :-1] are scored against labels[:, 1:], and the "
                "loss belongs to the role at t + 1."
            ),
        ),
        "only the answer trained": (
            torch.randn(1, 7, vocab_size, generator=generator),
            [[ignored] * 4 + [5, 4, 2]],
            [prompt_roles],
            "positions labelled -100 add nothing to the loss.",
        ),
        "a batch of two with padding": (
            torch.randn(2, 6, vocab_size, generator=generator),
            [[1, 6, 7, 5, 2, ignored], [1, 7, 3, 3, 5, 2]],
            [
                ["system", "system", "user", "assistant", "assistant", "padding"],
                ["system", "user", "user", "vision", "assistant", "assistant"],
            ],
            "add the losses of every row before dividing by the total.",
        ),
    }
    cases = [
        CheckCase(
            name,
            {"logits": logits, "labels": torch.tensor(labels), "roles": roles},
            _reference_loss_share(logits, torch.tensor(labels), roles),
            hint,
        )
        for name, (logits, labels, roles, hint) in toy.items()
    ]
    return run_check(
        function,
        cases,
        tolerance=1e-5,
        hint="per-token cross-entropy of logits[:, :-1] against labels[:, 1:], "
        "summed per role of the predicted token, divided by the total.",
    )
