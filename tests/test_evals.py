"""``backchannel eval``, as a user runs it: the examples pass with the scripted model
(typed and spoken) and with the local model, a wrong expectation fails with a message
that says what happened, and a broken eval file is refused before any call."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from backchannel.evals.checks import Happened
from backchannel.evals.rules import answer
from backchannel.evals.spec import load
from backchannel.llm.base import TextDelta, ToolCallRequest

EXAMPLES = Path(__file__).parent.parent / "examples"
ORDER_DESK = EXAMPLES / "order-desk.eval.yaml"
SILENT = EXAMPLES / "silent-result.eval.yaml"


def run(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backchannel.cli", "eval", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_examples_pass_with_the_scripted_model_and_write_junit(tmp_path: Path) -> None:
    report = tmp_path / "evals.xml"
    done = run(ORDER_DESK, SILENT, "--junit", report)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "examples/order-desk.eval.yaml: 2/2 conversations passed" in done.stdout
    assert "silent-result.eval.yaml: 1/1 conversations passed" in done.stdout
    suites = ET.parse(report).getroot()
    assert [s.get("tests") for s in suites] == ["2", "1"]
    assert [s.get("failures") for s in suites] == ["0", "0"]
    names = [case.get("name") for case in suites.iter("testcase")]
    assert "the lookup's result is said once, when the floor is free" in names
    assert all(case.find("failure") is None for case in suites.iter("testcase"))


def test_the_examples_pass_with_the_local_model() -> None:
    done = run(ORDER_DESK, SILENT, "--llm", "local")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASS") == 3, done.stdout


def test_a_spoken_conversation_passes_through_the_real_voice_pipeline() -> None:
    done = run(ORDER_DESK, "--mode", "voice")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(voice," in done.stdout
    assert "2/2 conversations passed" in done.stdout


def test_a_wrong_expectation_fails_and_says_what_was_said(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.eval.yaml"
    wrong.write_text(
        ORDER_DESK.read_text()
        .replace("assistant: order-desk.json", f"assistant: {EXAMPLES / 'order-desk.json'}")
        .replace(
            "- not_called: check_order\n",
            '- not_called: check_order\n      - said: "we are closed"\n',
        )
    )
    report = tmp_path / "wrong.xml"
    done = run(wrong, "--junit", report)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1/2 conversations passed" in done.stdout
    assert "FAIL a question the prompt answers calls no tool" in done.stdout
    assert 'NO  said: "we are closed": never said; the assistant said [' in done.stdout
    assert "Shipping is free" in done.stdout  # what it did say
    assert "timeline:" in done.stdout
    [failure] = [f for f in ET.parse(report).getroot().iter("failure")]
    assert 'said: "we are closed": never said' in (failure.get("message") or "")


def test_a_call_that_ends_before_the_last_step_fails_the_conversation(tmp_path: Path) -> None:
    ends = tmp_path / "ends.eval.yaml"
    ends.write_text(
        """
assistant:
  firstMessage: Hello.
  model:
    model: rules
    tools: [{type: endCall}]
scripted:
  - {heard: bye, say: Goodbye., call: endCall}
conversations:
  - name: the assistant hangs up early
    steps:
      - say: bye
      - wait_for: {said: "never said"}
    expect:
      - said: Goodbye
"""
    )
    done = run(ends, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL the assistant hangs up early" in done.stdout
    assert "could not finish: the call ended before step 2 (wait_for) was done" in done.stdout


def test_a_broken_eval_file_is_refused_before_any_call(tmp_path: Path) -> None:
    broken = tmp_path / "broken.eval.yaml"
    broken.write_text(
        f"assistant: {EXAMPLES / 'order-desk.json'}\n"
        "conversations:\n  - steps: [{say: hi}]\n    expect: [{sayd: hi}]\n"
    )
    done = run(broken, timeout=60)
    assert done.returncode == 2
    assert "conversations[0].expect[0] must be one of said" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_scripted_rules_answer_words_tool_messages_and_results() -> None:
    rules = load(ORDER_DESK).rules
    asked = answer(rules, [{"role": "user", "content": "Where is order 4417?"}])
    assert asked == [ToolCallRequest(asked[0].id, "check_order", {"order_id": "4417"})]  # type: ignore[union-attr]
    placeholder = [
        {"role": "user", "content": "Where is order 4417?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
        {"role": "tool", "content": "This tool runs in the background. Its result..."},
        {"role": "assistant", "content": "Let me check that order."},  # its start line
    ]
    assert answer(rules, placeholder) == [TextDelta("I'm on it; the warehouse takes a moment.")]
    announced = [
        *placeholder,
        {"role": "assistant", "content": "I'm on it; the warehouse takes a moment."},
        {"role": "system", "content": "Background tool result for check_order: out for delivery"},
    ]
    [said] = answer(rules, announced)
    assert isinstance(said, TextDelta) and "out for delivery" in said.text


def test_what_the_assistant_said_is_read_as_passages() -> None:
    events = [
        {"type": "transcript", "role": "assistant", "transcript": "Your order is out,"},
        {"type": "transcript", "role": "assistant", "transcript": "arriving today."},
        {"type": "transcript", "role": "user", "transcript": "Thanks."},
        {"type": "transcript", "role": "assistant", "transcript": "You're welcome."},
    ]
    happened = Happened(events, [1.0, 2.0, 3.0, 4.0], [], [], [], 0.0)
    assert happened.said() == [
        (1.0, "Your order is out, arriving today."),
        (4.0, "You're welcome."),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("assistant: {}\nconversations: []\n", "needs `conversations`"),
        ("conversations: [{steps: []}]\n", "needs `assistant`"),
        ("assistant: x.json\nconversations: [{}]\n", "assistant 'x.json'"),
        ("assistant: {}\nmode: video\nconversations: [{}]\n", "mode must be one of"),
        ("assistant: {}\nconversations: [{expect: [{said: '('}]}]\n", "not a regular expression"),
        ("assistant: {}\nconversations: [{steps: [{result: {}}]}]\n", "result needs `tool`"),
        ("[1, 2\n", "is not valid YAML"),
        ("assistant: {}\ntools: {t: {after: soon}}\nconversations: [{}]\n", "number of seconds"),
        ("assistant: {}\ntools: [1]\nconversations: [{}]\n", "`tools` must be a mapping"),
        (
            "assistant: {}\nconversations: [{expect: [{tool_called: {arguments: {}}}]}]\n",
            "tool_called needs `name`",
        ),
        ("assistant: {}\nconversations: [{steps: [{wait_for: {said: '('}}]}]\n", "regular"),
        ("assistant: {}\nconversations: [{steps: [{wait: x}]}]\n", "number of seconds"),
    ],
)
def test_eval_file_mistakes_name_where_they_are(tmp_path: Path, text: str, error: str) -> None:
    from backchannel import ConfigError

    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"e\.yaml") as caught:
        load(path)
    assert error in caught.value.message
    assert caught.value.code == "invalid_eval"
