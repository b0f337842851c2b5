"""A local model through llama.cpp (``llama-cpp-python``), fully offline.

The prompt is rendered with the model's own chat template, read from the GGUF file, so
tools appear in the form the model was trained on; its tool calls come back as text and
are read by :class:`~backchannel.llm.tool_markup.ToolMarkupScanner`.

llama.cpp is blocking and one model serves one generation at a time. Generation runs in
a worker thread that hands each piece of text to the event loop as it is produced and
checks a stop flag between tokens, so a barge-in stops it within one token; the stream
does not return until the worker has let go of the model, so the next turn never races
the last one.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import itertools
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import ConfigError, ProviderError
from . import lookup
from .base import LLMChunk, LLMRequest, TextDelta, ToolCallStarting
from .call_grammar import (
    ARGUMENTS_OPEN,
    NAME_OPEN,
    CallGrammars,
    answerable,
    by_name,
    doomed,
    filled,
    grounded,
    possible,
    said_values,
    salvaged,
)
from .prompt_frame import answering, declined, framed
from .tool_markup import ToolMarkupScanner

#: The decision step: a reply opens with a tool call when the model gives the tokens
#: that open one at least this probability as its first token. Greedy decoding needs a
#: majority; a small model often wavers below it on a clear request and then describes
#: the tool in words instead. Lower catches more late-turn requests, but chit-chat
#: (0.05-0.09 on a bakery's questions) then pays for a call it does not make: about a
#: second before its first word.
CALL_THRESHOLD = 0.1
#: The decision step's bar when the caller's latest words hold a value a tool requires
#: (see :func:`.call_grammar.filled`).
CALL_THRESHOLD_FILLED = 0.03
#: From this probability on, the call is sure enough to open before it is checked.
CALL_SURE = 0.5
#: The bar when the assistant's prompt looks like it answers the caller's latest words
#: (see :func:`.call_grammar.answerable`): only a call the model is sure of.
CALL_THRESHOLD_ANSWERED = CALL_SURE
#: Never part of speech when tools are offered: a tool's name (``check_order``), code
#: marks, braces. Tokens containing them are barred from a spoken reply.
UNSPEAKABLE = ("_", "`", "{", "}")
#: Whole words barred too: a model whose call was turned down for invented values tends
#: to narrate one instead ("I called the check function with the arguments ...").
UNSPEAKABLE_WORDS = frozenset(
    {"function", "functions", "tool", "argument", "arguments", "parameter", "parameters"}
)
#: The most a call's arguments may take: a runaway value ends the call, unfinished.
CALL_TOKENS = 160
#: What opens a call under the grammar (Qwen's tag, as its template writes calls).
CALL_OPEN, CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"
_DONE = object()
_RETRACT = object()  # forget the call tag already given to the scanner
#: Opening prompts (one per assistant, roughly) whose evaluated state is kept; a few
#: tens of MB each.
PROMPT_STATES = 8
#: A read-ahead evaluates this many tokens at a time and lets go of the model between
#: slices, so a request that comes meanwhile waits for one slice, not the whole text.
READ_AHEAD_SLICE = 16


class LlamaCppLLM:
    one_ask_per_response = True

    def __init__(
        self,
        model_path: Path | str,
        *,
        context: int = 4096,
        threads: int | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 7,
    ) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.model = Llama(
            model_path=str(model_path),
            n_ctx=context,
            n_threads=threads or os.cpu_count() or 2,
            seed=seed,
            verbose=False,
        )
        template = self.model.metadata.get("tokenizer.chat_template")
        if not template:
            raise ProviderError(f"{model_path} carries no chat template", code="llm_error")
        eos = self.model.token_eos()
        bos = self.model.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.model._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self.model._model.token_get_text(bos) if bos != -1 else "",
        )
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._model_lock = threading.Lock()
        self._openers, unspeakable = self._scan_vocabulary()
        #: What speech may not contain when tools are offered: the start of a call, and
        #: the marks of a tool described instead of called (braces, backticks, names).
        self._no_calls = {token: -100.0 for token in (*self._openers, *unspeakable)}
        self._grammars = CallGrammars(self._grammar_parses)
        #: Evaluated opening prompts: their tokens → the model's saved state.
        self._states: dict[tuple[int, ...], bytes] = {}
        #: Every request (a stream or a read-ahead) takes the next number; a read-ahead
        #: gives up once a later one was made.
        self._tickets = itertools.count(1)
        self._latest = 0

    def _scan_vocabulary(self) -> tuple[list[int], list[int]]:
        """One pass over the vocabulary (150k tokens): the tokens a tool call can start
        with (its tags, and ``{``/```` ``` ```` for the bare calls small models write), and
        those barred from speech besides (code marks, tool talk). Control tokens
        (``<|im_end|>`` ends the reply) are in neither."""
        openers, unspeakable = [], []
        for token in range(self.model.n_vocab()):
            text = self.model._model.token_get_text(token)
            if text.startswith("<|") and text.endswith("|>"):
                continue
            word = text.lstrip("\u0120\u010a ")
            if word == "<" or word.startswith(("<tool", "<function", "{", "[{", "```")):
                openers.append(token)
            elif any(mark in text for mark in UNSPEAKABLE) or word.lower() in UNSPEAKABLE_WORDS:
                unspeakable.append(token)
        return openers, unspeakable

    def _grammar_parses(self, rules: str) -> bool:
        """Whether llama.cpp's own parser takes these grammar rules."""
        import llama_cpp

        vocab = self.model._model.vocab
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, rules.encode(), b"root")
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    def close(self) -> None:
        """Free the model's memory now rather than at interpreter exit."""
        with self._model_lock:
            self.model.close()

    def render(self, request: LLMRequest) -> tuple[str, list[str]]:
        """The prompt text and stop strings, exactly as the model will see them."""
        messages = framed(request)
        tools: Any = list(request.tools) or None  # OpenAI-format, as the template expects
        formatted = self._formatter(messages=cast(Any, messages), tools=tools)
        stop = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop or ""]
        return formatted.prompt, [s for s in stop if s] or ["<|im_end|>"]

    async def prepare(self, request: LLMRequest) -> None:
        """Have the KV cache hold a prompt before it is asked for.

        An opening prompt (system prompt and tools, about 3 s of CPU for the 1.5B model,
        before the caller's first turn) is evaluated whole and its state kept per prompt
        (the last :data:`PROMPT_STATES` of them), so the next call of the same assistant
        restores it in milliseconds: its first turn is as fast as the later ones.

        Any other prompt (the caller's words so far, the next turn's history, an
        announcement) is read ahead in slices of :data:`READ_AHEAD_SLICE` tokens, and
        the work stops as soon as a later request is made: a reply never waits for
        more than one slice of a read-ahead it did not need.
        """
        prompt, _stop = self.render(request)
        opening = not any(m.get("role") == "user" for m in request.messages)
        ticket = self._new_request()
        work = functools.partial(self._prepare, prompt, keep=opening, ticket=ticket)
        await asyncio.to_thread(work)

    def _new_request(self) -> int:
        """Number a new request; the read-aheads made before it give up."""
        self._latest = next(self._tickets)
        return self._latest

    def _prepare(self, prompt: str, *, keep: bool, ticket: int) -> None:
        tokens = tuple(self.model.tokenize(prompt.encode("utf-8"), special=True))
        if not keep:
            while self._latest == ticket:
                with self._model_lock:
                    held = self._held(tokens)
                    if held >= len(tokens):
                        return
                    self._evaluate(tokens[: held + READ_AHEAD_SLICE], held)
            return
        with self._model_lock:
            held = self._held(tokens)
            saved = self._states.pop(tokens, None)
            if saved is not None:
                self._states[tokens] = saved  # most recently used last
                if held < len(tokens):
                    self._restore(tokens, saved)
                return
            if held < len(tokens):
                self._evaluate(tokens, held)
            self._states[tokens] = self._save()
            while len(self._states) > PROMPT_STATES:
                del self._states[next(iter(self._states))]

    def _held(self, tokens: tuple[int, ...]) -> int:
        """How many of ``tokens`` the cache holds: their common start, nothing more.

        A span the prompt no longer has (the reminder before the caller's earlier words,
        moved on to their latest; an announcement's instruction) is never cut out of the
        cache with what followed it kept: those tokens were read with the span before
        them, and the model then leans away from a call it makes on a fresh reading
        ("what does shipping cost?" 0.06 instead of 0.14). What follows the change is
        evaluated again, by a read-ahead while a reply is heard where there is one."""
        return _common_prefix(self.model._input_ids.tolist(), tokens)

    def _evaluate(self, tokens: tuple[int, ...], held: int) -> None:
        """Evaluate ``tokens`` past the ``held`` ones the cache already has; generate
        nothing. A cache that cannot drop a partial range (recurrent models) starts over."""
        if held and not self.model._ctx.kv_cache_seq_rm(-1, held, -1):
            held = 0
            cast(Any, self.model).reset()
        self.model.n_tokens = held
        self.model.eval(tokens[held:])

    def _call_probability(self, prompt: str, request: LLMRequest) -> float:
        """The decision step: how likely the reply opens with a tool call. Evaluates the
        prompt (what the cache does not hold yet) and weighs the first token: the share
        of its probability on the tokens that open a call (:data:`CALL_THRESHOLD`).
        Never right after the tools' results (see :func:`.prompt_frame.answering`) nor
        for a request that ends in an instruction (an announcement): a small model asked
        to tell a result calls its tool again, and again for the next result."""
        last = request.messages[-1].get("role") if request.messages else None
        if not request.tools or answering(request) or last == "system":
            return 0.0  # after results, and to announce them: speech
        tokens = tuple(self.model.tokenize(prompt.encode("utf-8"), special=True))
        # The last token is evaluated again even when cached: its logits decide.
        held = min(self._held(tokens), len(tokens) - 1)
        self._evaluate(tokens, held)
        logits = np.ctypeslib.as_array(
            self.model._ctx.get_logits_ith(-1), shape=(self.model.n_vocab(),)
        ).astype(np.float64)
        weights = np.exp(logits - logits.max())
        return float(weights[self._openers].sum() / weights.sum())

    def _speak(
        self,
        prompt: str,
        bias: dict[int, float] | None,
        options: dict[str, Any],
        halt: threading.Event,
    ) -> Iterator[str]:
        """The spoken reply to ``prompt``, piece by piece. Greedy replies (temperature 0,
        the default) draft from the prompt (:mod:`.lookup`): the same words, fewer
        steps; sampled ones go through llama.cpp's own sampler."""
        if options["temperature"] > 0:
            chunks: Any = self.model.create_completion(prompt, logit_bias=bias, **options)
            for chunk in chunks:
                yield chunk["choices"][0]["text"]
            return
        tokens = tuple(self.model.tokenize(prompt.encode("utf-8"), special=True))
        held = min(self._held(tokens), len(tokens) - 1)
        self._evaluate(tokens[:-1], held)  # the last is evaluated again: its logits start
        yield from lookup.greedy(
            self.model,
            tokens,
            bias=bias,
            max_tokens=options["max_tokens"],
            stop=options["stop"],
            halt=halt,
        )

    def _write_call(
        self,
        prompt: str,
        request: LLMRequest,
        options: dict[str, Any],
        halt: threading.Event,
        shown: Callable[[str], None] | None,
    ) -> str | None:
        """Write one call after ``prompt`` under the tools' grammars: the tool's name
        (sampled, when there is more than one), the fixed text up to its arguments
        (evaluated in one batch), then the arguments, checked as they are written. The
        call's JSON, or None once it holds a value nobody said (see :func:`.doomed`;
        most of a second sooner than at its end) or the stream was halted. ``shown``
        gets the text of a call shown as it is written, up to its arguments."""
        tools = by_name(request.tools)
        names = list(tools)
        if not names:
            return None
        # The name is chosen among the tools that could be called with values somebody
        # said (one that needs a number nobody gave would only be dropped). Left with
        # one whose values are all choices (nothing in it is checked against what was
        # said), the model still chooses among all: a request for a tool it cannot call
        # yet is not turned into an order of something else.
        choices = [n for n in names if possible(request, n)]
        if not choices or (len(choices) == 1 and not said_values(tools[choices[0]])):
            choices = names
        name = choices[0]
        if len(choices) > 1:
            chosen: Any = self.model.create_completion(
                prompt + CALL_OPEN + NAME_OPEN,
                **{**options, "stream": False, "max_tokens": 32},
                grammar=self._grammars.names([tools[n] for n in choices]),
            )
            name = chosen["choices"][0]["text"].removesuffix('"')
        if halt.is_set() or name not in names or doomed(name, "", request):
            return None
        opening = NAME_OPEN + name + ARGUMENTS_OPEN
        if shown is not None:
            shown(opening)
        written = self._grammars.arguments(tools[name])
        arguments = written.opening
        chunks: Any = self.model.create_completion(
            prompt + CALL_OPEN + opening + arguments,
            **{**options, "max_tokens": CALL_TOKENS},
            grammar=written.grammar,
        )
        for chunk in chunks:
            arguments += chunk["choices"][0]["text"]
            if halt.is_set():
                return None
            if doomed(name, arguments, request):
                kept = salvaged(name, arguments, request)
                if kept is None:
                    return None
                arguments = kept + "}"  # an optional value nobody said is left out
                break
        body = opening + arguments + "}"
        if not grounded(body, request):
            return None
        return arguments + "}" if shown is not None else body

    def _save(self) -> bytes:
        import llama_cpp

        ctx = self.model._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(ctx, buffer, size)
        return bytes(buffer)[:written]

    def _restore(self, tokens: tuple[int, ...], data: bytes) -> None:
        import llama_cpp

        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_set_data(self.model._ctx.ctx, buffer, len(data)) != len(data):
            model: Any = self.model  # what the cache holds is unknown now: start afresh
            model.reset()
            model._ctx.kv_cache_clear()
            raise ProviderError("could not restore the model's prompt state", code="llm_error")
        n = min(len(tokens), self.model.n_ctx())
        self.model.input_ids[:n] = tokens[:n]
        self.model.n_tokens = n
        self.model._requires_eval = True

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        prompt, stop = self.render(request)
        scanner = ToolMarkupScanner([t["function"]["name"] for t in request.tools])
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[object] = asyncio.Queue()
        halt = threading.Event()
        self._new_request()  # read-aheads still at work give way

        def emit(piece: object) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        def generate() -> None:
            try:
                with self._model_lock:
                    p_call = self._call_probability(prompt, request)
                    speech = prompt
                    options: dict[str, Any] = {
                        "max_tokens": request.max_tokens or self.max_tokens,
                        "temperature": (
                            self.temperature if request.temperature is None else request.temperature
                        ),
                        "stop": stop,
                        "stream": True,
                    }
                    sure = p_call >= CALL_SURE
                    bar = (
                        CALL_THRESHOLD_ANSWERED
                        if answerable(request)
                        else CALL_THRESHOLD_FILLED
                        if filled(request)
                        else CALL_THRESHOLD
                    )
                    if sure or (p_call >= bar and possible(request)):
                        # A sure call opens at once (its start line plays while the
                        # arguments are written); a doubtful one only once checked.
                        shown = emit if sure else None
                        if sure:
                            emit(CALL_OPEN)
                        body = self._write_call(prompt, request, options, halt, shown)
                        if halt.is_set():
                            return
                        if body is not None:
                            emit(body + CALL_CLOSE if sure else CALL_OPEN + body + CALL_CLOSE)
                            return
                        if sure:  # the open tag is dropped: what follows is speech
                            emit(_RETRACT)
                    if p_call >= min(bar, CALL_THRESHOLD):
                        # A call it leaned to and did not make (values nobody said,
                        # nothing new to look up, or the prompt answers it): the model
                        # is told no tool fits, or it promises to look ("Let me check
                        # that") instead of answering.
                        speech, _stop = self.render(declined(request))
                    # Speech, with no call and no tool described in it.
                    bias = self._no_calls if request.tools else None
                    for piece in self._speak(speech, bias, options, halt):
                        if halt.is_set():
                            break
                        emit(piece)
            except Exception as exc:  # surfaces in the stream below
                emit(exc)
            finally:
                emit(_DONE)

        worker = loop.run_in_executor(None, generate)
        try:
            while (piece := await pieces.get()) is not _DONE:
                if isinstance(piece, Exception):
                    raise ProviderError(f"local model failed: {piece}", code="llm_error")
                if piece is _RETRACT:  # the call it opened was turned down
                    scanner = ToolMarkupScanner(scanner.tool_names)
                    continue
                if text := scanner.feed(str(piece)):
                    yield TextDelta(text)
                if name := scanner.starting():
                    yield ToolCallStarting(name)
            rest, calls = scanner.finish()
            if rest.strip():
                yield TextDelta(rest)
            for call in calls:
                yield call
        finally:
            halt.set()
            await asyncio.shield(worker)


def _common_prefix(a: list[int], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def resolve_model(name: str) -> Path:
    """A pinned model's name (``qwen2.5-1.5b``) or a path to any ``.gguf`` file."""
    from .local_models import MODELS, installed_model

    if name in MODELS:
        return installed_model(name)
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    known = ", ".join(sorted(MODELS))
    raise ConfigError(f"local model {name!r} is neither one of {known} nor a .gguf file")


class LazyLlamaCpp:
    """A :class:`LlamaCppLLM` loaded on first use, in a worker thread, so a server that
    never needs the local model never pays the second it takes to load."""

    one_ask_per_response = True

    def __init__(self, name: str) -> None:
        self.path = resolve_model(name)  # fails now, at configuration, not mid-call
        self._llm: LlamaCppLLM | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> LlamaCppLLM:
        async with self._lock:
            if self._llm is None:
                self._llm = await asyncio.to_thread(LlamaCppLLM, self.path)
            return self._llm

    async def prepare(self, request: LLMRequest) -> None:
        await (await self.get()).prepare(request)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        llm = await self.get()
        async for chunk in llm.stream(request):
            yield chunk
