"""Which words over the assistant's speech cut it: Vapi's stopSpeakingPlan rules."""

from __future__ import annotations

from backchannel.config import StopSpeakingPlan
from backchannel.voice.interruption import Interruptions, words


def test_words_are_lower_case_without_punctuation_or_annotations() -> None:
    assert words("Mm-hmm. Don't (coughs) STOP!") == ["mm-hmm", "dont", "stop"]
    assert words("  ...  ") == []


def test_acknowledgements_never_cut_and_real_words_do() -> None:
    rules = Interruptions(StopSpeakingPlan())
    hums = ("MM", "Mmmm", "Mmmmmmmmmmm", "HMHN", "N-m-m", "N M M", "Uh", "uhhuh", "Mm-huh")
    for ack in ("Okay.", "Yeah, right.", "Mm-hmm", "I see.", "uh-huh", "Mhm.", "Yeah okay", *hums):
        assert not rules.cuts(ack), ack
        assert not rules.cuts(ack, final=True), ack
    assert not rules.cuts("") and not rules.cuts("(coughs)"), "a sound is not words"
    assert rules.cuts("What time do you close?")
    assert rules.cuts("Wait"), "an interruption phrase cuts at once"
    assert rules.cuts("Yeah, but no."), "it cuts even beside an acknowledgement"
    assert rules.cuts("Mmm, when do you open?"), "a hum before words"
    assert rules.cuts("Hmm, nah"), "a hum before an interruption phrase"


def test_num_words_needs_that_many_words_while_the_caller_talks() -> None:
    rules = Interruptions(StopSpeakingPlan(num_words=3, interruption_phrases=[]))
    assert not rules.cuts("Where is")
    assert rules.cuts("Where is my")
    assert rules.cuts("Where is", final=True), "once they stop, any real word is a turn"


def test_with_no_acknowledgements_and_no_word_count_speech_cuts_at_once() -> None:
    assert not Interruptions(StopSpeakingPlan(acknowledgement_phrases=[])).enabled
    assert Interruptions(StopSpeakingPlan()).enabled
    assert Interruptions(StopSpeakingPlan(acknowledgement_phrases=[], num_words=2)).enabled


def test_a_joining_word_before_an_acknowledgement_does_not_make_it_a_turn() -> None:
    rules = Interruptions(StopSpeakingPlan())
    for heard in ("And Mm-hmm.", "So, okay.", "Oh, uh-huh", "Well, right.", "In a m-m."):
        assert not rules.cuts(heard, final=True), heard
    assert rules.cuts("And then what?", final=True), "joining words with real ones"
    for answer in ("Yeah, in.", "Okay, a.", "In a minute."):
        assert rules.cuts(answer, final=True), "'in' and 'a' are glue only before a hum"
    assert rules.cuts("So", final=True), "a word alone is a turn once they stop"


def test_the_first_real_word_and_the_phrases_that_cut_at_once() -> None:
    rules = Interruptions(StopSpeakingPlan())
    assert rules.first_word("Mm-hmm, sorry, one thing") == "sorry"
    assert rules.first_word("Okay. Mm.") is None
    assert rules.urgent("Wait, what?") and not rules.urgent("In a month.")


def test_a_sound_spelled_letter_by_letter_is_a_hum() -> None:
    """Whisper spells a hum it cannot place ("N-a-m", "M-m-h-"): not a word."""
    rules = Interruptions(StopSpeakingPlan())
    for heard in ("N-a-m.", "M-m-h-", "In N-a-m."):
        assert not rules.cuts(heard, final=True), heard
    assert rules.first_word("N-a-m.") is None
    assert rules.first_word("In a m-m.") is None, "partial transcripts read it alike"
    assert rules.cuts("X-ray", final=True) and rules.cuts("T-shirt", final=True), "a word"
    assert rules.cuts("S-M-I-T-H", final=True) and rules.cuts("A-B-D", final=True), "spelled"
    assert rules.cuts("N-a-m, when do you open?", final=True)
