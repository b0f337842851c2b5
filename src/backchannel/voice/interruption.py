"""Whether what the caller says over the assistant is an interruption.

People acknowledge while they listen ("mm-hmm", "okay", "right"); a voice assistant that
stops for each of those is hard to talk to. The rules are Vapi's ``stopSpeakingPlan``:
acknowledgement phrases never cut, interruption phrases always do, other words cut once
there are ``numWords`` of them (at least one). A sound with no words (a cough, a door)
never cuts by its words; a tentative turn that goes on longer than any acknowledgement
cuts anyway, and if it then brings no words the call resumes the cut sentence.
"""

from __future__ import annotations

import math
import re

from ..config import StopSpeakingPlan

#: Longer than any acknowledgement ("yeah okay, sure"): speech over the assistant that
#: lasts this long cuts it, words or not.
MAX_ACKNOWLEDGEMENT_SECONDS = 1.2
#: Non-lexical sounds recognisers write for murmurs; they are not words.
_MURMURS = frozenset({"mm", "mmm", "hm", "hmm", "mhm", "uh", "um", "er", "ah", "oh"})
#: A hum as a recogniser spells it, of any length: Whisper writes a spoken "mm-hmm" as
#: "MM", "Mmmm", "N-m-m", "N M M" or "HMHN", and "uh-huh" as "Uh".
_HUM = re.compile(r"[mhn]+|u+h+(h*u+h+)*|m+h*u+h+")
#: A hum spelled out letter by letter ("N-a-m", "M-m-h"): how Whisper writes one it
#: cannot place. Only a hum's letters: a spelled name ("S-M-I-T-H") stays words.
_SPELLED = re.compile(r"[mnhaeu](-[mnhaeu])+")
#: Words that join an acknowledgement without making it a turn ("and mm-hmm", "so
#: okay"), and that Whisper also puts in front of a hum it was primed to hear.
_GLUE = frozenset({"and", "so", "well", "then", "oh"})
#: What Whisper puts in front of a hum ("In Mm-hmm.", "In a m-m."): not words there,
#: and only there ("dine in", "plan A" are).
_LEAD_IN = frozenset({"in", "a"})
_ANNOTATION = re.compile(r"\([^)]*\)|\[[^\]]*\]|\*[^*]*\*")
_NOT_WORD = re.compile(r"[^a-z0-9\- ]+")


def words(text: str) -> list[str]:
    """Lower-case words without punctuation; apostrophes dropped ("don't" → "dont"),
    hyphens kept ("mm-hmm"), annotations such as "(coughs)" removed."""
    text = _ANNOTATION.sub(" ", text.lower()).replace("'", "").replace("\u2019", "")
    return [w.strip("-") for w in _NOT_WORD.sub(" ", text).split() if w.strip("-")]


def _key(phrase: str) -> str:
    return " ".join(words(phrase)).replace("-", "")


class Interruptions:
    def __init__(self, plan: StopSpeakingPlan) -> None:
        self.num_words = plan.num_words
        self._acks = {_key(p) for p in plan.acknowledgement_phrases}
        self._ack_words = {k for k in self._acks if " " not in k} | _MURMURS
        self._cutters = {_key(p) for p in plan.interruption_phrases}

    @property
    def enabled(self) -> bool:
        """Whether speech over the assistant is weighed at all (else it cuts at once)."""
        return bool(self._acks) or self.num_words > 0

    def too_long(self, seconds: float) -> bool:
        return seconds >= MAX_ACKNOWLEDGEMENT_SECONDS

    def _real(self, word: str) -> bool:
        """Not an acknowledgement's word, a murmur or a hum."""
        return word not in self._ack_words and not _HUM.fullmatch(word)

    def _said(self, text: str) -> list[str]:
        """The words as the phrase lists are keyed (:func:`_bare`), without what Whisper
        puts in front of a hum ("In a m-m." is the hum)."""
        said = _bare(text)
        lead = next((i for i, w in enumerate(said) if w not in _LEAD_IN), len(said))
        if 0 < lead < len(said) and not self._real(said[lead]):
            return said[lead:]
        return said

    def urgent(self, text: str) -> bool:
        """Whether the words hold an interruption phrase ("stop", "wait"): these cut at
        once, even in a partial transcript."""
        return self._has_cutter(" ".join(self._said(text)))

    def _has_cutter(self, joined: str) -> bool:
        return any(_contains(joined, cutter) for cutter in self._cutters)

    def first_word(self, text: str) -> str | None:
        """The first word that is not an acknowledgement or a murmur, if any."""
        return next((w for w in self._said(text) if self._real(w)), None)

    def cuts(self, text: str, *, final: bool = False) -> bool:
        """Whether these words cut the assistant. While the caller is still talking,
        ``numWords`` real words are needed; once they have stopped, any real word makes
        it a turn of its own."""
        said = self._said(text)
        if not said:
            return False
        joined = " ".join(said)
        if self._has_cutter(joined):
            return True
        if joined in self._acks:
            return False
        real = [w for w in said if self._real(w)]
        if len(real) < len(said) and all(w in _GLUE for w in real):
            return False  # an acknowledgement with a joining word
        return len(real) >= (1 if final else max(1, math.ceil(self.num_words)))


def _bare(text: str) -> list[str]:
    """The words, hyphens dropped ("mm-hmm" → "mmhmm"), as the phrase lists are keyed;
    a sound spelled out letter by letter reads as the hum it is ("hm")."""
    return ["hm" if _SPELLED.fullmatch(w) else w.replace("-", "") for w in words(text)]


def _contains(text: str, phrase: str) -> bool:
    return f" {phrase} " in f" {text} "
