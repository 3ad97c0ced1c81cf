"""Batched greedy decoding with a bounded length: the one generator every free-text evaluation
uses (paper-exact answer parsing, safety of generations).

Prompts are sorted by token length and left-padded, so each batch pads little and every row's
continuation starts at the same position. Decoding is greedy (deterministic given the weights),
and stops at max_new_tokens or when every row has emitted EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def generate_continuations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    max_length: int,
) -> list[str]:
    """The greedy continuation of every prompt (text after the prompt, special tokens removed).

    Prompts longer than max_length - max_new_tokens tokens are cut from the left, keeping the
    end of the prompt, which is what the continuation depends on most. `tokenizer`: an
    AnswerEncoder (a chat model's prompts are its template's user turn + generation prompt) or a
    tokenizer (plain text).
    """
    import torch

    from trainables.evaluation.option_scoring import left_padded
    from trainables.evaluation.over_ranks import merged, my_batches
    from trainables.tokenization import as_encoder

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    budget = max(1, max_length - max_new_tokens)
    encoder = as_encoder(tokenizer)
    tokenizer = encoder.tokenizer
    encoded = [ids[-budget:] for ids in encoder.prompt_ids(prompts)]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    mine: dict[int, str] = {}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in my_batches(range(0, len(order), batch_size)):  # this rank's share (evaluation.over_ranks)
                rows = order[start : start + batch_size]
                # generate() derives position ids from the mask itself.
                input_ids, attention, _ = left_padded([encoded[i] for i in rows], pad_id)
                width = input_ids.shape[1]
                generated = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad_id,
                    eos_token_id=tokenizer.eos_token_id,
                    # Greedy decoding ignores these, but a checkpoint's generation_config may set
                    # them and transformers then warns on every call.
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
                for r, i in enumerate(rows):
                    mine[i] = tokenizer.decode(generated[r, width:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    outputs = merged(mine)
    return [outputs[i] for i in range(len(encoded))]
