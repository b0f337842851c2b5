"""Spoken numbers in tool-call arguments, read as the tool's schema asks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backchannel.llm.base import LLMRequest
from backchannel.llm.call_grammar import (
    CallGrammars,
    answerable,
    arguments_schema,
    doomed,
    filled,
    grounded,
    possible,
    said_values,
    salvaged,
)
from backchannel.tools.arguments import normalise, spoken_digits, ungrounded

SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^[0-9]+$"},
        "zip": {"type": "string", "pattern": r"^\d{5}$"},
        "party": {"type": "integer"},
        "name": {"type": "string"},
        "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]+$"},
    },
}


@pytest.mark.parametrize(
    ("said", "digits"),
    [
        ("4,417", "4417"),
        ("4 4 1 7", "4417"),
        ("44-17", "4417"),
        ("four four one seven", "4417"),
        ("Four, four, one, seven.", "4417"),
        ("double four one seven", "4417"),
        ("forty four seventeen", "4417"),
        ("two thousand and five", "2005"),
        ("one hundred twenty three", "123"),
        ("oh five", "05"),
        ("order 4417", None),
        ("", None),
    ],
)
def test_spoken_digits(said: str, digits: str | None) -> None:
    assert spoken_digits(said) == digits


def test_values_are_read_as_the_schema_asks_and_others_are_left_alone() -> None:
    arguments = {
        "order_id": "4,417",
        "zip": "nine oh two one oh",
        "party": "four",
        "name": "Ann 4,4",
        "code": "AB 12",  # the pattern wants more than digits: left as written
        "extra": "1,000",  # not in the schema
    }
    assert normalise(arguments, SCHEMA) == {
        "order_id": "4417",
        "zip": "90210",
        "party": 4,
        "name": "Ann 4,4",
        "code": "AB 12",
        "extra": "1,000",
    }


def test_values_that_fit_are_untouched() -> None:
    assert normalise({"order_id": "0042", "party": 3}, SCHEMA) == {"order_id": "0042", "party": 3}
    assert normalise({"party": "many"}, SCHEMA) == {"party": "many"}
    assert normalise({"x": "4,417"}, {"type": "object"}) == {"x": "4,417"}


def test_a_tools_arguments_schema_forbids_invented_keys() -> None:
    assert arguments_schema({"function": {"name": "a", "parameters": SCHEMA}}) == {
        **SCHEMA,
        "additionalProperties": False,
    }
    assert arguments_schema({"function": {"name": "b"}}) == {"type": "object"}


HEARD = (
    "Hi, this is Emma Johnson. Do you deliver to zip code nine four one one zero? "
    "And book me a cleaning next Tuesday; my order was 4,417, or 9 6 1 4."
)
BOOKING = {
    "type": "object",
    "properties": {
        "zip": {"type": "string", "pattern": "^[0-9]+$"},
        "name": {"type": "string"},
        "day": {"type": "string"},
        "size": {"type": "string", "enum": ["small", "large"]},
        "party": {"type": "integer"},
    },
}


def test_values_the_caller_said_are_grounded_in_any_spoken_form() -> None:
    said = {"zip": "94110", "name": "Emma Johnson", "day": "next Tuesday", "size": "large"}
    assert ungrounded(said | {"party": 3}, BOOKING, HEARD) == []
    assert ungrounded({"zip": "4417"}, BOOKING, HEARD) == []
    assert ungrounded({"zip": "9614"}, BOOKING, HEARD) == []
    assert ungrounded({"day": "Tuesday", "name": "emma"}, BOOKING, HEARD) == []


def test_placeholders_nobody_said_are_not() -> None:
    invented = {"zip": "12345", "name": "John Doe", "day": "2023-10-15", "size": "small"}
    assert ungrounded(invented, BOOKING, HEARD) == ["zip", "name", "day"]
    assert ungrounded({"zip": "941"}, BOOKING, "zip code nine four one one zero") == []
    assert ungrounded({"zip": "94111"}, BOOKING, "zip code nine four one one zero") == ["zip"]


def test_a_call_made_before_is_grounded_only_if_the_caller_asks_again() -> None:
    tools = [{"type": "function", "function": {"name": "check_order", "parameters": SCHEMA}}]
    made = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "check_order", "arguments": '{"order_id": "4417"}'},
            }
        ],
    }
    asked = {"role": "user", "content": "Where is order 4,417?"}
    call = '{"name": "check_order", "arguments": {"order_id": "4417"}}'
    first = LLMRequest(messages=[asked], tools=tools)
    assert grounded(call, first)
    bye = LLMRequest(messages=[asked, made, {"role": "user", "content": "Goodbye!"}], tools=tools)
    assert not grounded(call, bye), "a repeat on goodbye"
    again = {"role": "user", "content": "Can you check 4417 again?"}
    assert grounded(call, LLMRequest(messages=[asked, made, again], tools=tools))
    assert not grounded('{"name": "other", "arguments": {}}', first)
    assert not grounded("not json", first)


def test_signs_decimals_and_odd_digits_are_left_as_written() -> None:
    schema = {"properties": {"n": {"type": "integer"}, "x": {"type": "number"}}}
    odd = {"n": "-3", "x": "12.50"}
    assert normalise(odd, schema) == odd
    assert normalise({"n": "12.50"}, schema) == {"n": "12.50"}
    assert normalise({"n": "²"}, schema) == {"n": "²"}
    assert normalise({"n": "1" * 5000}, schema) == {"n": "1" * 5000}


def test_only_values_said_as_they_are_are_checked() -> None:
    schema = {
        "properties": {
            "day": {"type": "string", "format": "date"},
            "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]+$"},
            "zip": {"type": "string", "pattern": r"^\d{5}$"},
            "notes": {"type": "string"},
        }
    }
    reshaped = {"day": "2026-12-01", "code": "AB12", "notes": "caller wants a window seat please"}
    assert ungrounded(reshaped, schema, "tomorrow, code a b one two, a window seat") == []
    assert ungrounded({"zip": "12345"}, schema, "zip nine four one one zero") == ["zip"]


def test_a_schema_the_grammar_cannot_take_falls_back_to_a_looser_grammar() -> None:
    calls: list[str] = []

    def valid(rules: str) -> bool:
        calls.append(rules)
        return True

    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {"type": "object", "properties": {"a": {"pattern": "(?=x)y"}}},
            },
        }
    ]
    assert CallGrammars(valid).arguments(tools[0]) is not None
    assert len(calls) == 1 and "(?=x)" not in calls[0], "any object, the loose grammar"
    digits = {"type": "function", "function": {"name": "g", "parameters": SCHEMA}}
    assert CallGrammars(valid).arguments(digits) is not None
    assert "\\d" not in calls[-1], "escapes llama.cpp does not know are spelled out"
    assert CallGrammars(lambda rules: False).arguments(digits).grammar is None


def test_a_required_first_key_is_written_out_before_the_grammar_takes_over() -> None:
    rules: list[str] = []
    grammars = CallGrammars(lambda text: rules.append(text) is None)
    lookup = {"function": {"name": "f", "parameters": {**SCHEMA, "required": ["order_id"]}}}
    assert grammars.arguments(lookup).opening == ' {"order_id": "'
    root = next(line for line in rules[-1].splitlines() if line.startswith("root ::="))
    assert root.startswith("root ::= ( [0-9]+"), "the value, past its opening quote"
    sized = {"type": "object", "properties": {"size": {"enum": ["a", "b"]}}, "required": ["size"]}
    assert grammars.arguments({"function": {"name": "g", "parameters": sized}}).opening == (
        ' {"size":'
    ), "not past the colon: the model writes the space with the value's quote"
    assert grammars.arguments({"function": {"name": "h", "parameters": SCHEMA}}).opening == "", (
        "no key is certain when none is required"
    )


def test_the_name_grammar_offers_each_tool_and_closes_the_quote() -> None:
    calls: list[str] = []
    tools = [{"function": {"name": "check_order"}}, {"function": {"name": "book"}}]
    assert CallGrammars(lambda rules: calls.append(rules) is None).names(tools) is not None
    assert calls == ['root ::= ("check_order" | "book") "\\""']


def test_a_question_the_assistants_prompt_answers_is_told_from_a_request() -> None:
    shop = (
        "You are the phone assistant of Spoke and Chain, a bike repair shop. We are open "
        "Tuesday to Saturday from ten to six. A basic tune-up costs sixty dollars."
    )

    def request(words: str) -> LLMRequest:
        messages = [{"role": "system", "content": shop}, {"role": "user", "content": words}]
        return LLMRequest(messages=messages)

    assert answerable(request("How much is a tune-up?"))
    assert answerable(request("Are you open on Saturdays?"))
    assert not answerable(request("I'd like to book a tune-up for Saturday, I'm Lisa Park."))
    assert not answerable(request("Is my bike ready? The ticket is four zero eight one.")), (
        "a number is a value for a tool"
    )
    assert not answerable(request("Hey, how's it going?")), "small talk the prompt lacks"
    assert not answerable(LLMRequest(messages=[{"role": "user", "content": "How much?"}]))


def test_a_tool_whose_required_values_are_all_choices_has_nothing_said_to_check() -> None:
    def tool(**properties: Any) -> dict[str, Any]:
        parameters = {"type": "object", "properties": properties, "required": list(properties)}
        return {"type": "function", "function": {"name": "t", "parameters": parameters}}

    assert said_values(tool(name={"type": "string"}, size={"enum": ["s", "l"]}))
    assert not said_values(tool(size={"type": "string", "enum": ["s", "l"]}, n={"type": "integer"}))
    assert not said_values({"type": "function", "function": {"name": "t"}})


def test_an_invented_optional_value_is_left_out_of_a_call_not_the_call_dropped() -> None:
    reserve = {
        "type": "function",
        "function": {
            "name": "reserve_room",
            "parameters": {
                "type": "object",
                "properties": {
                    "room_type": {"type": "string", "enum": ["single", "double"]},
                    "check_in_date": {"type": "string"},
                    "guest_name": {"type": "string"},
                },
                "required": ["room_type", "check_in_date"],
            },
        },
    }
    words = "A double room from Friday, please."
    request = LLMRequest(messages=[{"role": "user", "content": words}], tools=[reserve])
    written = ' {"room_type": "double", "check_in_date": "Friday", "guest_name": "John Doe"}'
    assert doomed("reserve_room", written, request)
    kept = salvaged("reserve_room", written, request)
    assert kept is not None
    assert json.loads(kept + "}") == {"room_type": "double", "check_in_date": "Friday"}
    unsaid_required = ' {"room_type": "double", "check_in_date": "Monday", "guest_name": "'
    assert doomed("reserve_room", unsaid_required, request)
    assert salvaged("reserve_room", unsaid_required, request) is None, "a required value"
    early = ' {"room_type": "double", "guest_name": "John Doe", "check_in_date": "Friday"}'
    assert salvaged("reserve_room", early, request) is None, "a required key still missing"


def test_a_call_is_doomed_as_soon_as_it_writes_a_value_nobody_said() -> None:
    lookup = {"type": "function", "function": {"name": "check_order", "parameters": SCHEMA}}
    lookup["function"]["parameters"] = {**SCHEMA, "required": ["order_id"]}
    book = {"type": "function", "function": {"name": "book", "parameters": BOOKING}}

    def request(words: str) -> LLMRequest:
        return LLMRequest(messages=[{"role": "user", "content": words}], tools=[lookup, book])

    hours = request("What are your opening hours?")
    assert doomed("check_order", "", hours), "needs a number; none was said"
    assert not doomed("book", "", hours)
    assert doomed("book", '{"zip": "1', hours), "no number said holds a 1"
    assert not doomed("book", '{"name": "John ', hours), "text may yet grow past 4 words"
    assert doomed("book", '{"name": "John Doe", ', hours), "whole, and nobody said it"
    assert doomed("book", '{"name": "GIFT1234567890', hours), "a runaway number"
    assert not doomed("book", '{"name": "table at 7:3', hours), "a time may be reshaped"
    assert not doomed("book", '{"size": "sm', hours), "chosen values are not judged"
    order = request("Where is order four four one seven, for Emma?")
    assert not doomed("check_order", "", order)
    assert not doomed("check_order", '{"order_id": "44', order)
    assert doomed("check_order", '{"order_id": "45', order)
    assert not doomed("book", '{"name": "Emma", "zip": "441', order)
    assert doomed("book", '{"name": "Emma", "day": "Monday", "zip": "4', order)
    assert not doomed("book", '{"name": "Emma", "party": 12', order), "numbers are chosen"
    made = {
        "role": "assistant",
        "tool_calls": [{"function": {"name": "check_order", "arguments": '{"order_id": "4417"}'}}],
    }
    later = LLMRequest(
        messages=[*order.messages, made, {"role": "user", "content": "What does shipping cost?"}],
        tools=[lookup, book],
    )
    assert doomed("check_order", '{"order_id": "4', later), "a repeat the latest words never ask"
    assert not doomed("book", '{"name": "Emma", "zip": "441', later), "another tool: all words"
    again = LLMRequest(
        messages=[*later.messages[:-1], {"role": "user", "content": "Check 4417 again?"}],
        tools=[lookup, book],
    )
    assert not doomed("check_order", '{"order_id": "441', again)


def test_a_call_is_possible_only_if_a_number_was_said_for_tools_that_need_one() -> None:
    lookup = {"type": "function", "function": {"name": "check_order", "parameters": SCHEMA}}
    lookup["function"]["parameters"] = {**SCHEMA, "required": ["order_id"]}
    book = {"type": "function", "function": {"name": "book", "parameters": BOOKING}}
    prompt = {"role": "system", "content": "Shipping is five dollars."}

    def request(words: str, *tools: dict[str, Any]) -> LLMRequest:
        return LLMRequest(messages=[prompt, {"role": "user", "content": words}], tools=tools)

    assert not possible(request("Do you ship to Canada?", lookup))
    assert possible(request("Where is order four four one seven?", lookup))
    assert possible(request("Do you ship to Canada?", lookup, book)), "book needs no number"
    asked = request("Where is order four four one seven?", lookup)
    made = {
        "role": "assistant",
        "tool_calls": [{"function": {"name": "check_order", "arguments": '{"order_id": "4417"}'}}],
    }
    result = {"role": "tool", "content": '{"orderId": "4417", "status": "shipped"}'}

    def then(words: str) -> LLMRequest:
        messages = [*asked.messages, made, result, {"role": "user", "content": words}]
        return LLMRequest(messages=messages, tools=[lookup])

    assert not possible(then("And what does shipping cost?")), "its only number is used"
    assert possible(then("Can you check 4417 again?")), "asked again in the latest words"
    assert possible(then("And my other order, 5120?"))


def test_a_request_is_filled_when_the_latest_words_hold_a_value_a_tool_requires() -> None:
    lookup = {"type": "function", "function": {"name": "check_order", "parameters": SCHEMA}}
    lookup["function"]["parameters"] = {**SCHEMA, "required": ["order_id"]}
    sizes = {**BOOKING, "required": ["size"]}
    book = {"type": "function", "function": {"name": "book", "parameters": sizes}}

    def request(*said: str) -> LLMRequest:
        messages = [{"role": "user", "content": words} for words in said]
        return LLMRequest(messages=messages, tools=[lookup, book])

    assert filled(request("Is my order four four one seven here yet?"))
    assert filled(request("A large one, please."))
    assert not filled(request("Do you ship to Canada?"))
    assert not filled(request("My order is 4417.", "Thanks, that's all.")), "the latest words"
    assert not filled(LLMRequest(messages=[], tools=[lookup]))
