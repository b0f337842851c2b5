"""The llama.cpp provider with the real Qwen2.5 1.5B model: its own chat template, tool
calls read from its text, no repeated calls after a placeholder, prompt cancellation."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from backchannel import LLMRequest, TextDelta, ToolCallRequest
from backchannel.errors import ConfigError
from backchannel.llm.base import ToolCallStarting
from backchannel.llm.call_grammar import CallGrammars
from backchannel.llm.local import (
    READ_AHEAD_SLICE,
    LazyLlamaCpp,
    LlamaCppLLM,
    _common_prefix,
    resolve_model,
)
from backchannel.llm.prompt_frame import TOOL_GUIDANCE, TOOL_REMINDER
from backchannel.tool_runs import PLACEHOLDER

pytestmark = pytest.mark.anyio

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "check_order",
            "description": "Look up an order's delivery status.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]
SYSTEM = {"role": "system", "content": "You are an order desk's voice assistant. Be brief."}
ASKED = [SYSTEM, {"role": "user", "content": "Can you check on my order 4417?"}]
CALLED = [
    *ASKED,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "check_order", "arguments": '{"order_id": "4417"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": PLACEHOLDER},
]


async def collect(llm: Any, messages: list[dict[str, Any]]) -> list[Any]:
    return [c async for c in llm.stream(LLMRequest(messages=messages, tools=TOOLS))]


def text_of(chunks: list[Any]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


def test_the_prompt_is_the_models_own_template_with_tools_and_calls(
    local_llm: LlamaCppLLM,
) -> None:
    prompt, stop = local_llm.render(LLMRequest(messages=CALLED, tools=TOOLS))
    assert prompt.startswith("<|im_start|>system\n")
    assert "<tools>" in prompt and '"name": "check_order"' in prompt
    # Arguments are an object in the call, not a JSON string inside a string.
    assert '"arguments": {"order_id": "4417"}' in prompt
    assert "<tool_response>" in prompt and "runs in the background" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_end|>" in stop


async def test_a_request_for_a_lookup_becomes_a_tool_call(local_llm: LlamaCppLLM) -> None:
    chunks = await collect(local_llm, ASKED)
    calls = [c for c in chunks if isinstance(c, ToolCallRequest)]
    assert [(c.name, dict(c.arguments)) for c in calls] == [("check_order", {"order_id": "4417"})]
    assert "{" not in text_of(chunks), "no JSON is spoken"


async def test_after_the_placeholder_it_speaks_instead_of_calling_again(
    local_llm: LlamaCppLLM,
) -> None:
    chunks = await collect(local_llm, CALLED)
    assert not any(isinstance(c, ToolCallRequest) for c in chunks)
    assert text_of(chunks).strip()


async def test_it_announces_a_background_result_from_the_history(
    local_llm: LlamaCppLLM,
) -> None:
    result = {"orderId": "4417", "status": "out for delivery", "eta": "this afternoon"}
    messages = [
        *CALLED,
        {"role": "assistant", "content": "I'm on it."},
        {
            "role": "system",
            "content": "Background tool result for check_order (toolCallId call_1): "
            + json.dumps(result),
        },
        {
            "role": "system",
            "content": "Briefly tell the user what came back from these background tool "
            "calls: check_order (toolCallId call_1). Use the results in the conversation; "
            "do not invent anything.",
        },
    ]
    said = text_of(await collect(local_llm, messages)).lower()
    assert "out for delivery" in said


async def test_cancelling_the_stream_stops_generation_and_frees_the_model(
    local_llm: LlamaCppLLM,
) -> None:
    story = [SYSTEM, {"role": "user", "content": "Tell me a long story about a parcel."}]
    stream = local_llm.stream(LLMRequest(messages=story, max_tokens=400))
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()  # what a barge-in does
    # The model is free at once: the next request runs and completes.
    again = await asyncio.wait_for(collect(local_llm, ASKED), timeout=60)
    assert any(isinstance(c, ToolCallRequest) for c in again)


async def test_the_lazy_provider_loads_once_and_refuses_unknown_models() -> None:
    lazy = LazyLlamaCpp("qwen2.5-1.5b")
    assert lazy.path == resolve_model("qwen2.5-1.5b")
    with pytest.raises(ConfigError, match="neither one of"):
        LazyLlamaCpp("no-such-model")


async def test_prepare_leaves_the_shared_prompt_in_the_cache(local_llm: LlamaCppLLM) -> None:
    request = LLMRequest(messages=[SYSTEM], tools=TOOLS)
    await local_llm.prepare(request)
    prompt, _stop = local_llm.render(request)
    tokens = local_llm.model.tokenize(prompt.encode(), special=True)
    assert list(local_llm.model._input_ids[: len(tokens)]) == tokens


async def test_an_opening_prompt_is_restored_not_evaluated_again_and_answers_the_same(
    local_llm: LlamaCppLLM,
) -> None:
    other = LLMRequest(messages=[{"role": "system", "content": "You sell bicycles."}], tools=TOOLS)
    opening = LLMRequest(messages=[SYSTEM], tools=TOOLS)
    await local_llm.prepare(opening)
    first = text_of(await collect(local_llm, [SYSTEM, {"role": "user", "content": "Hi!"}]))
    await local_llm.prepare(other)  # another assistant's prompt takes the cache
    prompt, _stop = local_llm.render(opening)
    key = tuple(local_llm.model.tokenize(prompt.encode(), special=True))
    assert key in local_llm._states, "an opening prompt's state is kept"
    await local_llm.prepare(opening)  # restored from the saved state
    assert list(local_llm.model._input_ids) == list(key)
    again = text_of(await collect(local_llm, [SYSTEM, {"role": "user", "content": "Hi!"}]))
    assert again == first, "the restored state answers exactly as the evaluated one"


async def test_the_callers_words_so_far_warm_the_cache_and_are_not_kept(
    local_llm: LlamaCppLLM,
) -> None:
    partial = LLMRequest(messages=[*ASKED[:1], {"role": "user", "content": "Can you check"}])
    kept = len(local_llm._states)
    await local_llm.prepare(partial)
    prompt, _stop = local_llm.render(partial)
    tokens = local_llm.model.tokenize(prompt.encode(), special=True)
    assert list(local_llm.model._input_ids) == tokens
    assert len(local_llm._states) == kept, "a prompt with the caller's words is not kept"


async def test_a_tool_call_is_announced_as_soon_as_the_tool_is_named(
    local_llm: LlamaCppLLM,
) -> None:
    chunks = await collect(local_llm, ASKED)
    starting = [i for i, c in enumerate(chunks) if isinstance(c, ToolCallStarting)]
    calls = [i for i, c in enumerate(chunks) if isinstance(c, ToolCallRequest)]
    assert calls, "the model called the tool"
    assert len(starting) == 1 and chunks[starting[0]].name == "check_order"
    assert starting[0] < calls[0]


DIGITS_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "check_order",
            "description": "Look up an order's delivery status.",
            "parameters": {
                "type": "object",
                "properties": {
                    "order_id": {
                        "type": "string",
                        "description": "The order number, digits only.",
                        "pattern": "^[0-9]+$",
                    }
                },
                "required": ["order_id"],
            },
        },
    }
]
SHOP = {
    "role": "system",
    "content": "You are the voice assistant of the Parcel and Co order desk, on a phone "
    "call. Shipping is free on orders over fifty dollars and five dollars otherwise.",
}
#: Two spoken turns before the request: where a small model used to stop calling tools.
CHATTED = [
    SHOP,
    {"role": "user", "content": "Hi there."},
    {"role": "assistant", "content": "Hello! How can I help you today?"},
    {"role": "user", "content": "Do you ship to Canada?"},
    {"role": "assistant", "content": "Yes, we ship to Canada."},
]


async def test_the_next_turn_read_ahead_leaves_only_the_callers_words_to_evaluate(
    local_llm: LlamaCppLLM,
) -> None:
    """While a reply is heard, the history up to the caller's next words is read ahead,
    the reminder at its new place included: their turn then starts from there."""
    await local_llm.prepare(
        LLMRequest(messages=[*CHATTED, {"role": "user", "content": ""}], tools=TOOLS)
    )
    words = "Where is my order?"
    turn = LLMRequest(messages=[*CHATTED, {"role": "user", "content": words}], tools=TOOLS)
    prompt, _stop = local_llm.render(turn)
    tokens = local_llm.model.tokenize(prompt.encode(), special=True)
    held = _common_prefix(local_llm.model._input_ids.tolist(), tuple(tokens))
    rest = local_llm.model.detokenize(tokens[held:]).decode()
    assert rest.startswith(words), rest
    assert TOOL_REMINDER not in rest, "the moved reminder was read ahead"


#: A turn with a tool's answer, the reminder before the caller's words while it lasts.
ANSWERED = [
    SHOP,
    {"role": "assistant", "content": "Hello, Parcel and Co, how can I help?"},
    {"role": "user", "content": "Hello, where is my order number 4,417?"},
    CALLED[2],
    {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
    {"role": "assistant", "content": "Your order 4417 has shipped."},
]


async def test_after_a_moved_reminder_the_call_is_decided_as_on_a_fresh_reading(
    local_llm: LlamaCppLLM,
) -> None:
    """The next turn's prompt has the reminder before the caller's new words, no longer
    before their earlier ones: the cache keeps only what came before its old place, so
    the earlier turn is read again without it, and the call probability is the one an
    empty cache gives (the turn kept as it was read, reminder first, gave 0.80 for 0.62)."""
    await local_llm.prepare(LLMRequest(messages=ANSWERED, tools=TOOLS))
    prompt, _stop = local_llm.render(LLMRequest(messages=ANSWERED, tools=TOOLS))
    cached = local_llm.model.tokenize(prompt.encode(), special=True)
    asked = [*ANSWERED, {"role": "user", "content": "And can you check order 5521?"}]
    later = LLMRequest(messages=asked, tools=TOOLS)
    prompt, _stop = local_llm.render(later)
    tokens = tuple(local_llm.model.tokenize(prompt.encode(), special=True))
    with local_llm._model_lock:
        held = local_llm._held(tokens)
        assert held == _common_prefix(cached, tokens) < len(cached)
        assert TOOL_REMINDER not in local_llm.model.detokenize(tokens[:held]).decode()
        warm = local_llm._call_probability(prompt, later)
        local_llm.model.reset()
        fresh = local_llm._call_probability(prompt, later)
    assert warm == pytest.approx(fresh, abs=0.05), (warm, fresh)


async def test_a_read_ahead_gives_way_to_a_later_request(
    local_llm: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply made while a long read-ahead runs waits for one slice of it, not all."""
    evaluated: list[int] = []
    evaluate = local_llm._evaluate
    started = threading.Event()

    def counted(tokens: tuple[int, ...], held: int) -> None:
        evaluated.append(len(tokens) - held)
        evaluate(tokens, held)
        started.set()

    monkeypatch.setattr(local_llm, "_evaluate", counted)
    await local_llm.prepare(LLMRequest(messages=[SYSTEM], tools=TOOLS))
    evaluated.clear()
    started.clear()
    talk = " ".join(f"I would like item number {n} please." for n in range(60))
    long = LLMRequest(messages=[SYSTEM, {"role": "user", "content": talk}], tools=TOOLS)
    prompt, _stop = local_llm.render(long)
    size = len(local_llm.model.tokenize(prompt.encode(), special=True))
    reading = asyncio.create_task(local_llm.prepare(long))
    assert await asyncio.to_thread(started.wait, 120), "the read-ahead is under way"
    chunks = await collect(local_llm, ASKED)
    await reading
    assert [c.name for c in chunks if isinstance(c, ToolCallRequest)] == ["check_order"]
    assert evaluated[0] <= READ_AHEAD_SLICE
    assert sum(evaluated) < size / 2, (evaluated, size)


async def test_a_request_after_chit_chat_is_still_a_call_with_digits_as_the_schema_asks(
    local_llm: LlamaCppLLM,
) -> None:
    asked = [*CHATTED, {"role": "user", "content": "Where is my order number 4,417?"}]
    chunks = [c async for c in local_llm.stream(LLMRequest(messages=asked, tools=DIGITS_TOOLS))]
    calls = [(c.name, dict(c.arguments)) for c in chunks if isinstance(c, ToolCallRequest)]
    assert calls == [("check_order", {"order_id": "4417"})], text_of(chunks)
    assert not text_of(chunks).strip(), "the call is the whole reply"


@pytest.mark.parametrize(
    "words", ["Hi there.", "What does shipping cost?", "Thanks, that's all.", "Can you hear me?"]
)
async def test_chit_chat_is_answered_in_words_that_never_describe_a_tool(
    local_llm: LlamaCppLLM, words: str
) -> None:
    for history in ([SHOP], CHATTED):
        request = LLMRequest(
            messages=[*history, {"role": "user", "content": words}], tools=DIGITS_TOOLS
        )
        chunks = [c async for c in local_llm.stream(request)]
        said = text_of(chunks)
        assert not any(isinstance(c, ToolCallRequest) for c in chunks), said
        assert said.strip()
        assert not any(mark in said for mark in ("_", "{", "`")), said
        assert "function" not in said.lower() and "check order" not in said.lower(), said


def test_a_reminder_comes_before_the_callers_latest_words_once_there_is_history(
    local_llm: LlamaCppLLM,
) -> None:
    first, _stop = local_llm.render(LLMRequest(messages=ASKED, tools=TOOLS))
    assert first.count(TOOL_GUIDANCE) == 1 and TOOL_REMINDER not in first
    later = [*CHATTED, {"role": "user", "content": "Where is my order?"}]
    prompt, _stop = local_llm.render(LLMRequest(messages=later, tools=TOOLS))
    assert prompt.count(TOOL_GUIDANCE) == 1 and prompt.count(TOOL_REMINDER) == 1
    tail = prompt[prompt.rindex(TOOL_REMINDER) :]
    assert "Do you ship" not in tail and "Where is my order?" in tail


def test_an_announcement_after_the_reply_goes_without_the_reminder_as_the_next_turn_starts(
    local_llm: LlamaCppLLM,
) -> None:
    told = [*CHATTED, {"role": "system", "content": "Briefly tell the user: it shipped."}]
    announced, _stop = local_llm.render(LLMRequest(messages=told, tools=TOOLS))
    assert TOOL_REMINDER not in announced
    nxt = [*CHATTED, {"role": "user", "content": ""}]
    following, _stop = local_llm.render(LLMRequest(messages=nxt, tools=TOOLS))
    history = following[: following.rindex("<|im_start|>system")]
    assert announced.startswith(history), "the announcement shares the next turn's history"
    declined = [*CHATTED[:-1], {"role": "system", "content": "No tool fits this."}]
    prompt, _stop = local_llm.render(LLMRequest(messages=declined, tools=TOOLS))
    assert TOOL_REMINDER in prompt, "a turn's own steps keep it where it was"


def test_llama_cpp_takes_every_call_grammar_and_its_written_out_first_key(
    local_llm: LlamaCppLLM,
) -> None:
    refused: list[str] = []

    def valid(rules: str) -> bool:
        ok = local_llm._grammar_parses(rules)
        if not ok:
            refused.append(rules)
        return ok

    grammars = CallGrammars(valid)
    first_keys = [
        ('{"a": "', {"type": "string"}),
        ('{"a": "', {"type": "string", "pattern": r"^\d{3,5}$"}),
        ('{"a":', {"type": "string", "enum": ["x", "y"]}),
        ('{"a":', {"type": "integer"}),
        ('{"a":', {"type": "boolean"}),
        ('{"a":', {"type": "array", "items": {"type": "string"}}),
        ('{"a":', {"type": "object", "properties": {"b": {"type": "string"}}}),
    ]
    for opening, first in first_keys:
        parameters = {
            "type": "object",
            "properties": {"a": first, "z": {"type": "integer"}},
            "required": ["a"],
        }
        written = grammars.arguments({"function": {"name": "f", "parameters": parameters}})
        assert written.grammar is not None and written.opening == " " + opening, first
    loose = grammars.arguments({"function": {"name": "g"}})
    assert loose.grammar is not None and loose.opening == ""
    assert grammars.names([{"function": {"name": "f"}}, {"function": {"name": "g-2"}}])
    assert not refused


BAKERY = {
    "role": "system",
    "content": "You are the voice assistant of Kettle and Crumb, a bakery, on a phone call. "
    "We are open from eight to six. We take cards and cash. Gift cards are sold in the shop.",
}
BOOKING_TOOLS = [
    *TOOLS,
    {
        "type": "function",
        "function": {
            "name": "book_table",
            "description": "Book a table for the caller.",
            "parameters": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "people": {"type": "integer"},
                    "day": {"type": "string", "enum": ["friday", "saturday", "sunday"]},
                },
                "required": ["name", "people", "day"],
            },
        },
    },
]


async def test_the_tool_is_chosen_among_several_and_its_arguments_follow_its_schema(
    local_llm: LlamaCppLLM,
) -> None:
    asks = {
        "Can you check on my order 4417?": ("check_order", {"order_id": "4417"}),
        "Book a table for four on Saturday, the name is Emma.": (
            "book_table",
            {"name": "Emma", "people": 4, "day": "saturday"},
        ),
    }
    for words, expected in asks.items():
        messages = [BAKERY, {"role": "user", "content": words}]
        chunks = [c async for c in local_llm.stream(LLMRequest(messages, tools=BOOKING_TOOLS))]
        calls = [(c.name, dict(c.arguments)) for c in chunks if isinstance(c, ToolCallRequest)]
        assert calls == [expected], text_of(chunks)


@pytest.mark.parametrize(
    "words", ["Do you sell gift cards?", "Can I pay by card?", "When are you open?"]
)
async def test_a_doubtful_call_with_values_nobody_said_gives_way_to_words(
    local_llm: LlamaCppLLM, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No pattern on the order id: the model may start a call and write a placeholder
    # ("GIFT1234…", "12345"); that call is dropped and the caller is answered.
    written: list[str] = []  # what the model wrote under a call's grammar
    complete = local_llm.model.create_completion

    def counted(*args: Any, **kwargs: Any) -> Any:
        out = complete(*args, **kwargs)
        if kwargs.get("grammar") is None or not kwargs.get("stream"):
            return out
        return (written.append(c["choices"][0]["text"]) or c for c in out)

    monkeypatch.setattr(local_llm.model, "create_completion", counted)
    messages = [BAKERY, {"role": "user", "content": words}]
    chunks = [c async for c in local_llm.stream(LLMRequest(messages, tools=TOOLS))]
    said = text_of(chunks)
    assert not any(isinstance(c, ToolCallRequest) for c in chunks), said
    assert said.strip() and not any(mark in said for mark in ("_", "{", "`")), said
    assert len(written) <= 8, f"dropped at its first unsaid value, not at its end: {written}"
