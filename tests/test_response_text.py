"""How a response's text is cut into what goes to speech."""

from __future__ import annotations

from backchannel.response import _split_first_clause, _split_sentences


def test_the_first_clause_goes_alone_as_soon_as_it_is_complete() -> None:
    assert _split_first_clause("Yes, we ship") == ["Yes, ", "we ship"]
    assert _split_first_clause("Good news: your ") == ["Good news: ", "your "]
    assert _split_first_clause("We are open from nine") == ["We are open from nine"]
    assert _split_first_clause("Hello there. How") == ["Hello there. ", "How"]
    assert _split_first_clause("4,417 is") == ["4,417 is"], "a digit group is no clause"
    assert _split_first_clause(", and") == [", and"]


def test_later_text_goes_sentence_by_sentence() -> None:
    assert _split_sentences("One. Two, three! Fo") == ["One. ", "Two, three! ", "Fo"]
