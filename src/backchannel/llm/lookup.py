"""Greedy decoding that drafts from the prompt (prompt lookup) and checks each draft in
one batch.

A voice assistant's answer often repeats words it was given: "We are open from eight to
six" is in the system prompt, "order 4417" in the caller's turn. Once the last tokens
written also stand somewhere earlier in the prompt or the answer, the tokens that
followed them there are a likely continuation: they are evaluated together with the
token just chosen, and each one the model would have chosen itself is taken without a
step of its own. A batch of four costs about one and a half single steps on a CPU, and
a copied phrase of eight tokens takes two or three steps instead of eight.

The result is greedy decoding (every token is the model's top choice, logit bias
applied): only the number of evaluations changes. One caveat: a token checked in a batch
gets logits a little different from the same token evaluated alone (floating-point
order; up to about 0.5 here), so where two choices are that close the reply may differ
from the one-token-at-a-time reply; no such case was seen in tests. Sampling at a
temperature is not done here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

#: Tokens drafted at a time: a batch of this many plus the chosen token costs about as
#: much as two (1.5 single steps measured on a 2-core x86 machine).
DRAFT_TOKENS = 3
#: The shortest run of tokens that must match earlier text before its continuation is
#: drafted: a single token ("the", ",") matches everywhere and is usually wrong.
SHORTEST_MATCH = 2
#: The longest run tried first: a longer match is a surer draft.
LONGEST_MATCH = 4


def draft(context: Sequence[int], size: int = DRAFT_TOKENS) -> list[int]:
    """The tokens that followed the latest earlier occurrence of the longest run (of
    :data:`LONGEST_MATCH` down to :data:`SHORTEST_MATCH` tokens) that ``context`` ends
    with; none when that run stands nowhere else."""
    tokens = list(context)
    for n in range(LONGEST_MATCH, SHORTEST_MATCH - 1, -1):
        if len(tokens) <= n:
            continue
        tail = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start : start + n] == tail:
                follow = tokens[start + n : start + n + size]
                if follow:
                    return follow
    return []


class _Text:
    """Detokenized output released piece by piece: never half a UTF-8 character, never
    the start of a stop string that may still be completed."""

    def __init__(self, detokenize: Callable[[list[int]], bytes], stop: Sequence[str]) -> None:
        self._detokenize = detokenize
        self._stop = [s.encode("utf-8") for s in stop if s]
        self._tokens: list[int] = []
        self._sent = 0  # bytes already released
        self.stopped = False

    def add(self, token: int) -> str:
        """Take one token; the text it releases (maybe none)."""
        self._tokens.append(token)
        data = self._detokenize(self._tokens)
        for s in self._stop:
            at = data.find(s)
            if at >= 0:
                self.stopped = True
                return self._release(data, at)
        end = len(data) - _incomplete(data)
        for s in self._stop:
            for k in range(min(len(s) - 1, end), 0, -1):
                if data[:end].endswith(s[:k]):
                    end -= k
                    break
        return self._release(data, end)

    def rest(self) -> str:
        """What is held back, once nothing more follows (a character left unfinished is
        dropped, as llama.cpp drops it)."""
        data = self._detokenize(self._tokens)
        return self._release(data, len(data) - _incomplete(data))

    def _release(self, data: bytes, end: int) -> str:
        if end <= self._sent:
            return ""
        piece = data[self._sent : end].decode("utf-8", errors="replace")
        self._sent = end
        return piece


def _incomplete(data: bytes) -> int:
    """How many bytes at the end of ``data`` begin a UTF-8 character not yet complete."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: its lead byte is further back
        need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
        return back if back < need else 0
    return 0


def greedy(
    model: Any,
    tokens: Sequence[int],
    *,
    bias: dict[int, float] | None,
    max_tokens: int,
    stop: Sequence[str],
    halt: threading.Event,
) -> Iterator[str]:
    """Write the reply to ``tokens`` greedily on a llama.cpp model (``llama_cpp.Llama``)
    whose cache holds all of them but the last; yield its text as it is written, at most
    ``max_tokens`` tokens of it (0 or less: as many as the context holds). The cache ends
    holding the prompt and what was written."""
    import llama_cpp

    room = model.n_ctx() - len(tokens)
    max_tokens = min(max_tokens, room) if max_tokens > 0 else room
    if max_tokens <= 0:
        return
    n_vocab, vocab, ctx = model.n_vocab(), model._model.vocab, model._ctx
    barred = np.fromiter(bias or {}, dtype=np.int64)
    lowered = np.fromiter((bias or {}).values(), dtype=np.float32)

    def ends(token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(vocab, token))

    def evaluate(batch: list[int]) -> list[int]:
        """Evaluate ``batch`` after the cache; the top choice after each of its tokens."""
        past = model.n_tokens
        model._batch.set_batch(batch=batch, n_past=past, logits_all=True)
        ctx.decode(model._batch)
        model.input_ids[past : past + len(batch)] = batch
        model.n_tokens = past + len(batch)
        model._requires_eval = True  # the logits held may be a dropped draft's
        choices = []
        for i in range(len(batch)):
            logits = np.ctypeslib.as_array(ctx.get_logits_ith(i), shape=(n_vocab,))
            if barred.size:
                logits = logits.copy()
                logits[barred] += lowered
            choices.append(int(np.argmax(logits)))
        return choices

    text = _Text(model.detokenize, stop)
    # A recurrent model's state cannot drop a wrong draft: it is decoded a step at a time.
    drafts = not (getattr(model, "_is_recurrent", False) or getattr(model, "_is_hybrid", False))
    context = list(tokens)
    choice = evaluate([context[-1]])[0]
    written = 0
    while not halt.is_set():
        # ``choice`` is the model's next token; the draft after it is kept as far as the
        # model chooses each of its tokens itself, and ``following`` is its choice next.
        accepted, following = [choice], choice
        room = max_tokens - written - 1  # tokens this step may write after ``choice``
        if not ends(choice) and room > 0:
            proposed = draft([*context, choice])[:room] if drafts else []
            choices = evaluate([choice, *proposed])
            for token, chosen in zip(proposed, choices, strict=False):
                if token != chosen or ends(accepted[-1]):
                    break
                accepted.append(token)
            following = choices[len(accepted) - 1]
            if len(accepted) <= len(proposed):  # the rest of the draft is wrong
                keep = len(context) + len(accepted)
                ctx.kv_cache_seq_rm(-1, keep, -1)
                model.n_tokens = keep
        for token in accepted:
            if ends(token):
                if piece := text.rest():
                    yield piece
                return
            context.append(token)
            written += 1
            if piece := text.add(token):
                yield piece
            if text.stopped:
                return
            if written >= max_tokens:
                if piece := text.rest():
                    yield piece
                return
        choice = following
    # halted: nothing more is said
