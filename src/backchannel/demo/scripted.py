"""A rule-based stand-in for the order desk's model, for ``backchannel demo --llm
scripted``: the same call with no LLM at all, exact and instant."""

from __future__ import annotations

from ..llm.base import LLM, LLMChunk, LLMRequest
from ..llm.scripted import Reply, ScriptedLLM, call, say


def scripted_order_desk() -> LLM:
    def respond(request: LLMRequest) -> Reply:
        messages = list(request.messages)
        last = messages[-1]
        if last["role"] == "tool":
            if "out for delivery" in str(last["content"]):  # the result came in first
                return say("Your order is out for delivery, arriving this afternoon.")
            return say("I'm on it; the warehouse takes a moment.")
        user = next((str(m["content"]) for m in reversed(messages) if m["role"] == "user"), "")
        lowered = user.lower()
        # The caller's words wait for an answer when they are the newest thing said; a
        # result that landed during them rides along as a system note after them.
        spoken = [m for m in messages if m["role"] != "system"]
        asked = bool(spoken) and spoken[-1]["role"] == "user"
        reply: list[LLMChunk] = []
        if last["role"] == "user" and "order" in lowered and "shipping" not in lowered:
            digits = "".join(c for c in user if c.isdigit()) or "unknown"
            return [call("check_order", {"order_id": digits})]  # its start line plays
        if asked and "shipping" in lowered:
            reply += say("Shipping is free on orders over fifty dollars, five dollars otherwise. ")
        if last["role"] == "system" and "background tool calls" in str(last["content"]):
            note = next(
                str(m["content"])
                for m in reversed(messages)
                if "Background tool result" in str(m.get("content"))
            )
            status = "out for delivery" if "out for delivery" in note else "being checked"
            reply += say(f"Your order is {status}, arriving this afternoon.")
        if asked and ("bye" in lowered or "thank" in lowered):
            reply += say("You're welcome. Goodbye!")
        return reply or say("Is there anything else I can do?")

    return ScriptedLLM(respond=respond)
