"""Prompt-lookup decoding: drafts come from earlier text, the text is released whole,
and on the real model the reply is exactly llama.cpp's own greedy reply, written in fewer
evaluations."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from backchannel import LLMRequest
from backchannel.llm.local import LlamaCppLLM
from backchannel.llm.lookup import _Text, draft

SHOP = (
    "You are the voice assistant of Kettle and Crumb, a bakery, on a phone call. Answer in "
    "one short spoken sentence. We are open from eight to six every day. The shop is at 12 "
    "Mill Street. Gift cards are sold in the shop."
)


def test_a_draft_is_what_followed_the_longest_earlier_match() -> None:
    #                  0  1  2  3  4  5  6  7  8  9
    assert draft([5, 6, 7, 8, 9, 1, 2, 6, 7], size=3) == [8, 9, 1]
    # The longer match wins over a later, shorter one.
    assert draft([1, 2, 3, 4, 0, 3, 9, 0, 2, 3], size=2) == [4, 0]
    # At the end of the text, what there is.
    assert draft([4, 5, 6, 4, 5], size=3) == [6, 4, 5]


def test_no_draft_without_a_match_of_two_tokens() -> None:
    assert draft([1, 2, 3, 4, 3], size=3) == []  # one token matches: too weak
    assert draft([1, 2], size=3) == []
    assert draft([], size=3) == []


def test_text_is_released_whole_characters_and_never_a_stop_strings_start() -> None:
    pieces = {1: b"caf", 2: "é".encode()[:1], 3: "é".encode()[1:], 4: b" <|im", 5: b"_end|>"}
    text = _Text(lambda tokens: b"".join(pieces[t] for t in tokens), ["<|im_end|>"])
    assert text.add(1) == "caf"
    assert text.add(2) == ""  # half a character waits
    assert text.add(3) == "é"
    assert text.add(4) == " "  # "<|im" may be a stop string's start
    assert text.add(5) == "" and text.stopped


def test_text_held_back_for_a_stop_string_that_never_comes_is_released_at_the_end() -> None:
    pieces = {1: b"a <", 2: b"|i"}
    text = _Text(lambda tokens: b"".join(pieces[t] for t in tokens), ["<|im_end|>"])
    assert text.add(1) == "a "
    assert text.add(2) == ""
    assert text.rest() == "<|i"


def test_a_character_left_unfinished_at_the_end_is_dropped_not_replaced() -> None:
    pieces = {1: b"Hi ", 2: "\N{GRINNING FACE}".encode()[:2]}
    text = _Text(lambda tokens: b"".join(pieces[t] for t in tokens), ["<|im_end|>"])
    assert text.add(1) == "Hi "
    assert text.add(2) == ""
    assert text.rest() == ""


@pytest.mark.parametrize(
    "question",
    [
        "What are your opening hours?",
        "Where is your shop?",
        "Say 'café crème' and 'Straße' for me.",
        "Tell me everything about the shop in three sentences.",
    ],
)
def test_the_reply_is_llama_cpps_own_greedy_reply_in_fewer_evaluations(
    local_llm: LlamaCppLLM, question: str
) -> None:
    request = LLMRequest(
        messages=[{"role": "system", "content": SHOP}, {"role": "user", "content": question}]
    )
    prompt, stop = local_llm.render(request)
    options: dict[str, Any] = {"max_tokens": 60, "temperature": 0.0, "stop": stop}
    chunks: Any = local_llm.model.create_completion(prompt, stream=True, **options)
    expected = "".join(chunk["choices"][0]["text"] for chunk in chunks)

    context = local_llm.model._ctx
    decode, steps = context.decode, []

    def counted(batch: Any) -> None:
        steps.append(batch.n_tokens)
        decode(batch)

    context.decode = counted
    try:
        written = "".join(local_llm._speak(prompt, None, options, threading.Event()))
    finally:
        context.decode = decode
    assert written == expected
    tokens = len(local_llm.model.tokenize(expected.encode(), add_bos=False))
    # One evaluation to start, then at most one a token; fewer once a draft is taken.
    assert len(steps) <= tokens + 1
    if "hours" in question or "shop is" in expected:
        assert len(steps) < tokens, "a phrase from the prompt is taken in drafts"
