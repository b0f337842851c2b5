from __future__ import annotations

from backchannel import Conversation, Message, ToolCallRequest


def test_notes_wait_while_a_tool_call_block_is_open() -> None:
    c = Conversation([{"role": "system", "content": "sys"}])
    c.append(Message("user", "hi"))
    c.append(Message("assistant", None, (ToolCallRequest("a", "t"), ToolCallRequest("b", "t"))))
    assert c.block_open and c.unanswered == {"a", "b"}
    c.add_note(Message("system", "result arrived"))
    c.append(Message("tool", "ra", tool_call_id="a"))
    assert [m.role for m in c.messages][-1] == "tool", "still held"
    c.append(Message("tool", "rb", tool_call_id="b"))
    assert not c.block_open
    assert [m.content for m in c.messages][-1] == "result arrived"
    c.add_note(Message("system", "now direct"))
    assert c.messages[-1].content == "now direct"


def test_openai_format_transcript_and_empty_messages() -> None:
    c = Conversation([{"role": "system", "content": "sys"}])
    c.append(Message("user", "hi"))
    c.append(Message("assistant", None, (ToolCallRequest("a", "t", {"x": 1}),)))
    c.append(Message("tool", "ok", tool_call_id="a"))
    c.append(Message("assistant", ""))
    c.drop_empty()
    out = c.to_openai([{"role": "system", "content": "transient"}])
    assert out[0] == {"role": "system", "content": "sys"}
    assert out[2]["tool_calls"][0]["function"] == {"name": "t", "arguments": '{"x": 1}'}
    assert out[3] == {"role": "tool", "content": "ok", "tool_call_id": "a"}
    assert out[-1]["content"] == "transient"
    assert len(out) == 5
    assert c.transcript() == [{"role": "user", "content": "hi"}]
