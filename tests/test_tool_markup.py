from __future__ import annotations

import pytest

from backchannel.llm.tool_markup import ToolMarkupScanner

TOOLS = ["check_order", "get_weather"]


def scan(pieces: list[str], tools: list[str] = TOOLS) -> tuple[str, list[tuple[str, dict]]]:
    """Feed the pieces one by one, as a stream; return all spoken text and the calls."""
    scanner = ToolMarkupScanner(tools)
    spoken = "".join(scanner.feed(p) for p in pieces)
    rest, calls = scanner.finish()
    return spoken + rest, [(c.name, dict(c.arguments)) for c in calls]


def chars(text: str) -> list[str]:
    return list(text)


def test_plain_text_streams_through_as_it_comes() -> None:
    scanner = ToolMarkupScanner(TOOLS)
    assert scanner.feed("Sure, ") == "Sure, "
    assert scanner.feed("one moment.") == "one moment."
    assert scanner.finish() == ("", [])


@pytest.mark.parametrize(
    "output",
    [
        '<tool_call>\n{"name": "check_order", "arguments": {"order_id": "4417"}}\n</tool_call>',
        '<tool_call>{"name": "check_order", "arguments": {"order_id": "4417"}}',  # no close
        "<tool_call>{'name': 'check_order', 'arguments': {'order_id': '4417'}}</tool_call>",
        '<tool_call>{"name": "check_order", "arguments": {"order_id": "4417",},}</tool_call>',
        '<tool_call>{"name": "check_order", "arguments": "{\\"order_id\\": \\"4417\\"}"}',
        '<tool_call>\n```json\n{"name": "check_order", "parameters": {"order_id": "4417"}}\n```',
        '{"name": "check_order", "arguments": {"order_id": "4417"}}',  # bare
        '```json\n{"name": "check_order", "arguments": {"order_id": "4417"}}\n```',
        '[{"type": "function", "function": {"name": "check_order", '
        '"arguments": {"order_id": "4417"}}}]',
        '{{"name": "check_order", "arguments": {"order_id": "4417"}}}',  # template braces
        '<tools>\n{"type": "function", "function": {"name": "check_order", '
        '"arguments": {"order_id": "4417"}}}\n</tools>',
        '<function_call>{"name": "check_order", "arguments": {"order_id": "4417"}}',
    ],
)
def test_reads_the_call_whatever_shape_the_model_gave_it(output: str) -> None:
    for pieces in ([output], chars(output)):
        spoken, calls = scan(pieces)
        assert calls == [("check_order", {"order_id": "4417"})]
        assert spoken.strip() == ""


def test_text_before_a_call_is_spoken_and_the_call_is_held_back() -> None:
    out = 'One moment, checking.<tool_call>{"name": "check_order", "arguments": {}}</tool_call>'
    scanner = ToolMarkupScanner(TOOLS)
    spoken = [scanner.feed(c) for c in chars(out)]
    assert "".join(spoken) == "One moment, checking."
    assert not any("<" in s for s in spoken)  # not even a partial tag reached the speaker
    rest, calls = scanner.finish()
    assert rest == ""
    assert [c.name for c in calls] == ["check_order"]


def test_an_echoed_definition_is_no_call_but_the_call_after_it_is() -> None:
    definition = (
        '{"type": "function", "function": {"name": "check_order", "description": "Look up.", '
        '"parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}}'
    )
    call = '{{"name": "check_order", "arguments": {"order_id": "4417"}}}'
    out = f"<tools>\n{definition}\n</tools>{call}"
    spoken, calls = scan(chars(out))
    assert calls == [("check_order", {"order_id": "4417"})]
    assert spoken == ""


def test_several_calls_get_distinct_ids() -> None:
    out = (
        '<tool_call>{"name": "check_order", "arguments": {"order_id": "1"}}</tool_call>\n'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    )
    scanner = ToolMarkupScanner(TOOLS)
    scanner.feed(out)
    _, calls = scanner.finish()
    assert [(c.name, dict(c.arguments)) for c in calls] == [
        ("check_order", {"order_id": "1"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert len({c.id for c in calls}) == 2


def test_a_bare_call_to_an_unknown_tool_goes_to_the_engine_not_the_speaker() -> None:
    spoken, calls = scan(['{"name": "get_opening_hours", "arguments": {}}'])
    assert spoken == ""
    assert calls == [("get_opening_hours", {})]


def test_bare_json_that_is_not_a_known_tool_is_spoken_not_lost() -> None:
    spoken, calls = scan(['{"answer": 42}'])
    assert calls == []
    assert spoken == '{"answer": 42}'


def test_without_tools_a_brace_opening_is_just_text() -> None:
    scanner = ToolMarkupScanner([])
    assert scanner.feed("{curly} start") == "{curly} start"


def test_a_less_than_sign_that_is_no_tag_is_released_once_it_cannot_be_one() -> None:
    scanner = ToolMarkupScanner(TOOLS)
    assert scanner.feed("3 <") == "3 "
    assert scanner.feed(" 4 is false") == "< 4 is false"
    assert scanner.finish() == ("", [])


def test_garbage_inside_the_tags_yields_no_call_and_no_crash() -> None:
    spoken, calls = scan(["<tool_call>{name: check_order(((</tool_call> sorry"])
    assert calls == []
    assert spoken == "sorry"


def test_a_call_is_named_as_soon_as_its_name_is_written_once_per_call() -> None:
    scanner = ToolMarkupScanner(TOOLS)
    named = []
    text = '<tool_call>\n{"name": "check_order", "arguments": {"order_id": "4417"}}</tool_call>'
    text += '<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
    text += "<tool_call>{'name': 'get_weather', 'arguments': {}}</tool_call>"
    for i, piece in enumerate(chars(text)):
        scanner.feed(piece)
        if name := scanner.starting():
            named.append((name, i))
    assert [n for n, _ in named] == ["check_order", "get_weather"], "unknown tools unnamed"
    assert named[0][1] < text.index("arguments"), "before the arguments are written"
    assert scanner.starting() is None


def test_with_a_single_tool_the_call_tag_is_enough_to_name_it() -> None:
    scanner = ToolMarkupScanner(["check_order"])
    text = '<tool_call>\n{"name": "check_order", "arguments": {}}</tool_call>'
    named = []
    for i, piece in enumerate(chars(text)):
        scanner.feed(piece)
        if name := scanner.starting():
            named.append((name, i))
    assert named == [("check_order", len("<tool_call>") - 1)], "at the tag, and once"
    bare = ToolMarkupScanner(["check_order"])
    bare.feed('{"not": "a tag"')
    assert bare.starting() is None, "bare JSON may be no call: wait for the name"
