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
import json
import os
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast

from ..errors import ConfigError, ProviderError
from .base import LLMChunk, LLMRequest, TextDelta, ToolCallStarting
from .tool_markup import ToolMarkupScanner

# Appended to the system prompt when tools are offered: small models call tools far
# more reliably when told plainly how, and invent results less when told not to.
TOOL_GUIDANCE = (
    "Use a tool only when the user asks for exactly what it does; then output the tool "
    "call and nothing else. Otherwise reply briefly in words. Never make up a tool's result."
)
# After its tool calls were answered, a small model tends to apologise or call again;
# told plainly what to do, it says what is going on.
ANSWER_NOW = "Now tell the user in one short sentence what is happening with their request."
_DONE = object()
#: Opening prompts (one per assistant, roughly) whose evaluated state is kept; a few
#: tens of MB each.
PROMPT_STATES = 8


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
        self._no_calls = {token: -100.0 for token in self._call_openers()}
        #: Evaluated opening prompts: their tokens → the model's saved state.
        self._states: dict[tuple[int, ...], bytes] = {}

    def _call_openers(self) -> list[int]:
        """Tokens a tool call can start with: its tags, and ``{``/```` ``` ```` for the
        bare calls small models write. Special tokens (``<|im_end|>``) are not among them."""
        openers = []
        for token in range(self.model.n_vocab()):
            text = self.model._model.token_get_text(token).lstrip("\u0120\u010a ")
            if text == "<" or text.startswith(("<tool", "<function", "{", "[{", "```")):
                openers.append(token)
        return openers

    def close(self) -> None:
        """Free the model's memory now rather than at interpreter exit."""
        with self._model_lock:
            self.model.close()

    def render(self, request: LLMRequest) -> tuple[str, list[str]]:
        """The prompt text and stop strings, exactly as the model will see them."""
        messages = [_for_template(m) for m in request.messages]
        if request.tools:
            messages = _with_guidance(messages, TOOL_GUIDANCE)
        if _answering(request):
            messages.append({"role": "system", "content": ANSWER_NOW})
        tools: Any = list(request.tools) or None  # OpenAI-format, as the template expects
        formatted = self._formatter(messages=cast(Any, messages), tools=tools)
        stop = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop or ""]
        return formatted.prompt, [s for s in stop if s] or ["<|im_end|>"]

    async def prepare(self, request: LLMRequest) -> None:
        """Have the KV cache hold the call's opening prompt (system prompt and tools,
        about 3 s of CPU for the 1.5B model) before the caller's first turn.

        The evaluated state is kept per prompt (the last :data:`PROMPT_STATES` of them),
        so the next call of the same assistant restores it in milliseconds instead of
        evaluating it again: its first turn is as fast as the later ones.
        """
        prompt, _stop = self.render(request)
        # An opening prompt is kept; one with the caller's words (a partial transcript,
        # evaluated while they are still talking) only warms the cache for the reply.
        opening = not any(m.get("role") == "user" for m in request.messages)
        await asyncio.to_thread(functools.partial(self._prepare, prompt, keep=opening))

    def _prepare(self, prompt: str, *, keep: bool) -> None:
        tokens = tuple(self.model.tokenize(prompt.encode("utf-8"), special=True))
        with self._model_lock:
            held = _common_prefix(self.model._input_ids.tolist(), tokens)
            if held >= len(tokens):
                return  # already in the cache
            saved = self._states.pop(tokens, None) if keep else None
            if saved is not None:
                self._states[tokens] = saved  # most recently used last
                self._restore(tokens, saved)
                return
            # Evaluate only what the cache does not hold yet; generate nothing. A cache
            # that cannot drop a partial range (recurrent models) starts over.
            if held and not self.model._ctx.kv_cache_seq_rm(-1, held, -1):
                held = 0
                cast(Any, self.model).reset()
            self.model.n_tokens = held
            self.model.eval(tokens[held:])
            if keep:
                self._states[tokens] = self._save()
                while len(self._states) > PROMPT_STATES:
                    del self._states[next(iter(self._states))]

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

        def generate() -> None:
            try:
                with self._model_lock:
                    chunks: Any = self.model.create_completion(
                        prompt,
                        max_tokens=request.max_tokens or self.max_tokens,
                        temperature=(
                            self.temperature if request.temperature is None else request.temperature
                        ),
                        stop=stop,
                        logit_bias=self._no_calls if _answering(request) else None,
                        stream=True,
                    )
                    for chunk in chunks:
                        if halt.is_set():
                            break
                        loop.call_soon_threadsafe(pieces.put_nowait, chunk["choices"][0]["text"])
            except Exception as exc:  # surfaces in the stream below
                loop.call_soon_threadsafe(pieces.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, _DONE)

        worker = loop.run_in_executor(None, generate)
        try:
            while (piece := await pieces.get()) is not _DONE:
                if isinstance(piece, Exception):
                    raise ProviderError(f"local model failed: {piece}", code="llm_error")
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


def _answering(request: LLMRequest) -> bool:
    """Right after its tool calls were answered, the model must speak, not call again.

    Small models tend to repeat a call whose result is still pending ("runs in the
    background") in a loop; barring call openers for that one step stops it, at the
    price of chained calls (tool A, then B from A's answer) within one turn.
    """
    return bool(request.messages) and request.messages[-1].get("role") == "tool"


def _for_template(message: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI-format message → what chat templates expect: arguments as objects (the
    template serializes them itself) and no ``None`` content."""
    out = dict(message)
    if out.get("content") is None:
        out["content"] = ""
    calls = out.get("tool_calls")
    if calls:
        out["tool_calls"] = [
            {**c, "function": {**c["function"], "arguments": _arguments(c["function"])}}
            for c in calls
        ]
    return out


def _arguments(function: Mapping[str, Any]) -> Any:
    raw = function.get("arguments")
    if isinstance(raw, str):
        try:
            return json.loads(raw or "{}")
        except json.JSONDecodeError:
            return raw
    return raw


def _with_guidance(messages: list[dict[str, Any]], guidance: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{guidance}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": guidance}, *messages]


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
