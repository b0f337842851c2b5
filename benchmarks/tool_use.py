"""Tool use by the local model on spoken requests: does it call the right tool with the
right arguments when asked, stay in words when not, and never read its tools aloud?

    .venv/bin/python benchmarks/tool_use.py [--assistants 5] [--json PATH]

Five assistants (a pizza place, a dental clinic, a hotel front desk, a bike-repair shop,
a car rental), each with its own system prompt and one to three tools in OpenAI format,
ten spoken requests that need a tool, and four chit-chat lines that need none. Every line
is synthesized with Piper, framed by silence, cut into a turn by Silero VAD and
transcribed by Whisper tiny.en, once per run; the model (Qwen2.5 1.5B through llama.cpp,
temperature 0) gets the transcript, with the assistant's system prompt and tools only.

Each request is asked at turn 1, 3 or 6 of a call (in turn, so each position gets about a
third): before it, 0, 2 or 5 of that assistant's chit-chat lines, answered live by the
model. Each chit-chat line is also asked once as the first turn of a call of its own.

Scores: a request is right when the tool and the listed arguments are (strings compared
without case, punctuation or spaces; digit parameters by their digits; integers as
integers; free-text arguments may list alternatives, any of which the value may contain).
A chit-chat turn (its own call or a turn before a request) that calls a tool is a
spurious call. Over all turns, "tool talk" is spoken text naming a tool (with underscores
or spaces), or saying "function", "tool call" or "arguments", or holding ``{`` or a
backtick. Targets: right >= 95 %, spurious <= 2 %, tool talk 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backchannel.llm.base import LLMRequest, TextDelta, ToolCallRequest, ToolCallStarting
from backchannel.llm.local import LlamaCppLLM, resolve_model
from backchannel.voice.audio import Samples, resample
from backchannel.voice.stt import WhisperSTT, clip
from backchannel.voice.tts import PiperTTS, spoken
from backchannel.voice.vad import Activity, SileroVAD, TurnDetector

RATE = 16_000
FRAME = 320  # 20 ms
LEAD_SILENCE, TAIL_SILENCE, PRE_ROLL = 0.5, 1.0, 0.8  # seconds
POSITIONS = (1, 3, 6)
SORRY = "Sorry, could you say that again?"
MODEL = "qwen2.5-1.5b"

#: An expected argument: an int, a string (an enum value or digits), or alternatives for
#: a free-text argument (any of which the value may contain).
Expected = int | str | tuple[str, ...]


def tool(name: str, description: str, params: dict[str, Any], required: Sequence[str]) -> Any:
    """A tool in OpenAI function format."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": params, "required": list(required)},
        },
    }


def digits(description: str) -> dict[str, Any]:
    return {"type": "string", "pattern": "^[0-9]+$", "description": f"{description}, digits only"}


def text(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def integer(description: str) -> dict[str, Any]:
    return {"type": "integer", "description": description}


def choice(description: str, values: Sequence[str]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values), "description": description}


@dataclass(frozen=True)
class Request:
    line: str
    tool: str
    args: Mapping[str, Expected]


@dataclass(frozen=True)
class Assistant:
    name: str
    prompt: str
    tools: list[Any]
    requests: list[Request]
    chat: list[str]


PIZZA = Assistant(
    name="pizza",
    prompt=(
        "You are the phone assistant of Marino's Pizza. We are open every day from eleven "
        "in the morning to eleven at night and deliver within three miles. A large pizza is "
        "eighteen dollars, a medium fourteen and a small ten. Pickup orders are ready in "
        "about twenty minutes."
    ),
    tools=[
        tool(
            "place_pizza_order",
            "Place a pizza order for the caller.",
            {
                "size": choice("Pizza size", ["small", "medium", "large"]),
                "topping": text("The main topping, e.g. pepperoni or mushroom"),
                "quantity": integer("How many pizzas"),
                "fulfillment": choice("Delivery or pickup", ["delivery", "pickup"]),
            },
            ["size", "topping", "quantity", "fulfillment"],
        ),
        tool(
            "track_pizza_delivery",
            "Find out where a placed order is and when it will arrive.",
            {"order_number": digits("The order number")},
            ["order_number"],
        ),
        tool(
            "check_delivery_zone",
            "Check whether we deliver to a zip code.",
            {"zip_code": digits("The caller's zip code")},
            ["zip_code"],
        ),
    ],
    requests=[
        Request(
            "Hi, I'd like to order two large pepperoni pizzas for delivery, please.",
            "place_pizza_order",
            {"size": "large", "topping": ("pepperoni",), "quantity": 2, "fulfillment": "delivery"},
        ),
        Request(
            "Where's my pizza? My order number is eight one seven two.",
            "track_pizza_delivery",
            {"order_number": "8172"},
        ),
        Request(
            "Hi, do you deliver to zip code nine four one one zero?",
            "check_delivery_zone",
            {"zip_code": "94110"},
        ),
        Request(
            "Can I get one medium mushroom pizza for pickup?",
            "place_pizza_order",
            {"size": "medium", "topping": ("mushroom",), "quantity": 1, "fulfillment": "pickup"},
        ),
        Request(
            "I was wondering if you could check on order three eight zero six, it's been an hour.",
            "track_pizza_delivery",
            {"order_number": "3806"},
        ),
        Request(
            "Could you deliver to nine zero two one four?",
            "check_delivery_zone",
            {"zip_code": "90214"},
        ),
        Request(
            "Let me get three small cheese pizzas, I'll pick them up.",
            "place_pizza_order",
            {"size": "small", "topping": ("cheese",), "quantity": 3, "fulfillment": "pickup"},
        ),
        Request(
            "My pizza hasn't shown up yet. The order is seven two nine one.",
            "track_pizza_delivery",
            {"order_number": "7291"},
        ),
        Request(
            "I'm at zip code six zero six one four, is that in your delivery area?",
            "check_delivery_zone",
            {"zip_code": "60614"},
        ),
        Request(
            "Can I have one large sausage pizza delivered?",
            "place_pizza_order",
            {"size": "large", "topping": ("sausage",), "quantity": 1, "fulfillment": "delivery"},
        ),
    ],
    chat=[
        "Hi there!",
        "What time do you close tonight?",
        "How much is a large pizza?",
        "Okay, thanks, that's all.",
    ],
)

DENTAL = Assistant(
    name="dental",
    prompt=(
        "You are the receptionist of Brightside Dental, answering the phone. The clinic is "
        "open Monday to Friday from eight to five, and on Saturday mornings. Doctor Patel "
        "and Doctor Nguyen see patients, and a cleaning takes about forty-five minutes. "
        "There is free parking behind the building."
    ),
    tools=[
        tool(
            "book_dental_appointment",
            "Book an appointment for a patient.",
            {
                "patient_name": text("The patient's full name"),
                "day": text("The day the patient asked for, as they said it, e.g. next Tuesday"),
                "reason": choice(
                    "Why the patient is coming", ["cleaning", "checkup", "toothache", "whitening"]
                ),
            },
            ["patient_name", "day", "reason"],
        ),
        tool(
            "cancel_dental_appointment",
            "Cancel an existing appointment.",
            {"appointment_number": digits("The appointment number")},
            ["appointment_number"],
        ),
        tool(
            "find_patient_by_phone",
            "Look up a patient's file and upcoming appointments by their phone number.",
            {"phone_number": digits("The patient's phone number")},
            ["phone_number"],
        ),
    ],
    requests=[
        Request(
            "I'd like to book a cleaning for next Tuesday. My name is Emma Johnson.",
            "book_dental_appointment",
            {"patient_name": ("emma johnson",), "day": ("tuesday",), "reason": "cleaning"},
        ),
        Request(
            "I need to cancel my appointment, the number is six three one eight.",
            "cancel_dental_appointment",
            {"appointment_number": "6318"},
        ),
        Request(
            "Could you look me up? My phone number is four one five, two eight three, "
            "nine six zero seven.",
            "find_patient_by_phone",
            {"phone_number": "4152839607"},
        ),
        Request(
            "I have a terrible toothache, can I come in tomorrow? It's James Carter.",
            "book_dental_appointment",
            {"patient_name": ("james carter",), "day": ("tomorrow",), "reason": "toothache"},
        ),
        Request(
            "Please cancel appointment number two nine zero four.",
            "cancel_dental_appointment",
            {"appointment_number": "2904"},
        ),
        Request(
            "When is my next appointment? My number is seven zero three, four eight one, "
            "two six five nine.",
            "find_patient_by_phone",
            {"phone_number": "7034812659"},
        ),
        Request(
            "Hi, this is Laura Brown, I'd like a checkup on Friday.",
            "book_dental_appointment",
            {"patient_name": ("laura brown",), "day": ("friday",), "reason": "checkup"},
        ),
        Request(
            "I was wondering if you could cancel booking eight one four seven for me.",
            "cancel_dental_appointment",
            {"appointment_number": "8147"},
        ),
        Request(
            "My name is David Miller and I'd like to come in for whitening, maybe Monday?",
            "book_dental_appointment",
            {"patient_name": ("david miller",), "day": ("monday",), "reason": "whitening"},
        ),
        Request(
            "Can you pull up my file? The phone number is three one two, six four seven, "
            "zero eight one five.",
            "find_patient_by_phone",
            {"phone_number": "3126470815"},
        ),
    ],
    chat=[
        "Hello, can you hear me?",
        "Are you open on Saturdays?",
        "Do you have parking?",
        "Great, thank you so much.",
    ],
)

HOTEL = Assistant(
    name="hotel",
    prompt=(
        "You are the front desk assistant of the Harbor View Hotel, on a phone call. "
        "Check-in is from three in the afternoon and check-out is by eleven in the morning. "
        "Breakfast is served from seven to ten in the lobby restaurant, and the pool is open "
        "until nine at night. We have single rooms, double rooms and suites."
    ),
    tools=[
        tool(
            "reserve_room",
            "Reserve a room for a guest.",
            {
                "room_type": choice("The kind of room", ["single", "double", "suite"]),
                "nights": integer("How many nights"),
                "check_in_date": text("The arrival day as the guest said it"),
                "guest_name": text("The guest's name, if given"),
            },
            ["room_type", "nights", "check_in_date"],
        ),
        tool(
            "find_reservation",
            "Look up an existing reservation.",
            {"confirmation_number": digits("The confirmation number")},
            ["confirmation_number"],
        ),
        tool(
            "room_service_request",
            "Send food, drinks or supplies up to a guest's room.",
            {
                "room_number": digits("The guest's room number"),
                "item": text("What the guest wants brought up"),
            },
            ["room_number", "item"],
        ),
    ],
    requests=[
        Request(
            "I'd like to book a double room for three nights starting Friday.",
            "reserve_room",
            {"room_type": "double", "nights": 3, "check_in_date": ("friday",)},
        ),
        Request(
            "Can you find my reservation? Confirmation number eight four two six.",
            "find_reservation",
            {"confirmation_number": "8426"},
        ),
        Request(
            "Could you send two coffees up to room five one two?",
            "room_service_request",
            {"room_number": "512", "item": ("coffee",)},
        ),
        Request(
            "We need a suite for two nights from June tenth, the name is Olsen.",
            "reserve_room",
            {"room_type": "suite", "nights": 2, "check_in_date": ("june 10", "june tenth")},
        ),
        Request(
            "I was wondering if you could look up booking five three nine one.",
            "find_reservation",
            {"confirmation_number": "5391"},
        ),
        Request(
            "This is room two zero seven, could I get a club sandwich?",
            "room_service_request",
            {"room_number": "207", "item": ("club sandwich",)},
        ),
        Request(
            "I'd like a single room for tonight, just one night.",
            "reserve_room",
            {"room_type": "single", "nights": 1, "check_in_date": ("tonight", "today")},
        ),
        Request(
            "What's the status of my booking? It's confirmation seven one six zero.",
            "find_reservation",
            {"confirmation_number": "7160"},
        ),
        Request(
            "Please bring some extra towels to room three one five.",
            "room_service_request",
            {"room_number": "315", "item": ("towel",)},
        ),
        Request(
            "Please book me a single room for four nights from Monday.",
            "reserve_room",
            {"room_type": "single", "nights": 4, "check_in_date": ("monday",)},
        ),
    ],
    chat=[
        "Good evening.",
        "What time is check-out?",
        "Until when is the pool open?",
        "Perfect, that's everything.",
    ],
)

BIKES = Assistant(
    name="bikes",
    prompt=(
        "You are the phone assistant of Spoke and Chain, a bike repair shop. We are open "
        "Tuesday to Saturday from ten to six, and closed on Sundays and Mondays. A basic "
        "tune-up costs sixty dollars and most repairs are done within two days."
    ),
    tools=[
        tool(
            "book_repair",
            "Book a bike in for a repair or service.",
            {
                "service": choice(
                    "The work needed", ["tune-up", "flat tire", "brakes", "gears", "wheel truing"]
                ),
                "customer_name": text("The customer's name"),
                "day": text("The day they will bring the bike, as they said it"),
            },
            ["service", "customer_name", "day"],
        ),
        tool(
            "check_repair_ticket",
            "Tell a customer how the repair of their bike is going.",
            {"ticket_number": digits("The repair ticket number")},
            ["ticket_number"],
        ),
        tool(
            "check_part_in_stock",
            "Check whether a part or accessory is in stock in the shop.",
            {"part": text("The part or accessory, e.g. a 700c tube")},
            ["part"],
        ),
    ],
    requests=[
        Request(
            "My brakes are squeaking, can I bring the bike in on Thursday? My name is Tom Baker.",
            "book_repair",
            {"service": "brakes", "customer_name": ("tom baker",), "day": ("thursday",)},
        ),
        Request(
            "Is my bike ready? The ticket number is four zero eight one.",
            "check_repair_ticket",
            {"ticket_number": "4081"},
        ),
        Request(
            "Do you have a twenty-nine inch inner tube in stock?",
            "check_part_in_stock",
            {"part": ("tube",)},
        ),
        Request(
            "I'd like to book a tune-up for Saturday, my name is Lisa Park.",
            "book_repair",
            {"service": "tune-up", "customer_name": ("lisa park",), "day": ("saturday",)},
        ),
        Request(
            "I was wondering if you could check on repair ticket six two five three.",
            "check_repair_ticket",
            {"ticket_number": "6253"},
        ),
        Request(
            "Do you have a Shimano chain in stock right now?",
            "check_part_in_stock",
            {"part": ("chain",)},
        ),
        Request(
            "I've got a flat tire, could you fix it tomorrow? It's for Ben Walsh.",
            "book_repair",
            {"service": "flat tire", "customer_name": ("walsh",), "day": ("tomorrow",)},
        ),
        Request(
            "Can you tell me how the repair on ticket nine three seven two is going?",
            "check_repair_ticket",
            {"ticket_number": "9372"},
        ),
        Request(
            "Could you check if you have disc brake pads in stock?",
            "check_part_in_stock",
            {"part": ("brake pad",)},
        ),
        Request(
            "My gears keep slipping. Book me in for Wednesday, the name is Mark Stone.",
            "book_repair",
            {"service": "gears", "customer_name": ("stone",), "day": ("wednesday",)},
        ),
    ],
    chat=[
        "Hey, how's it going?",
        "Are you open on Mondays?",
        "How much is a tune-up?",
        "Alright, thanks, bye.",
    ],
)

CARS = Assistant(
    name="cars",
    prompt=(
        "You are the phone assistant of Coastline Car Rental at the airport. The counter is "
        "open every day from six in the morning to midnight. Every rental includes unlimited "
        "miles, and drivers must be at least twenty-one. We rent economy cars, compact "
        "cars, SUVs and vans."
    ),
    tools=[
        tool(
            "reserve_car",
            "Reserve a rental car.",
            {
                "car_class": choice("The kind of car", ["economy", "compact", "suv", "van"]),
                "pickup_day": text("The day the customer picks the car up, as they said it"),
                "rental_days": integer("For how many days"),
            },
            ["car_class", "pickup_day", "rental_days"],
        ),
        tool(
            "find_rental",
            "Look up an existing rental reservation.",
            {"reservation_number": digits("The reservation number")},
            ["reservation_number"],
        ),
        tool(
            "extend_rental",
            "Extend an existing rental by some days.",
            {
                "reservation_number": digits("The reservation number"),
                "extra_days": integer("How many days to add"),
            },
            ["reservation_number", "extra_days"],
        ),
    ],
    requests=[
        Request(
            "I need an SUV for five days, picking it up Friday.",
            "reserve_car",
            {"car_class": "suv", "pickup_day": ("friday",), "rental_days": 5},
        ),
        Request(
            "Can you pull up my reservation? It's two seven four eight.",
            "find_rental",
            {"reservation_number": "2748"},
        ),
        Request(
            "I'd like to keep my car two days longer. Reservation six one nine three.",
            "extend_rental",
            {"reservation_number": "6193", "extra_days": 2},
        ),
        Request(
            "Could I rent a compact car tomorrow for three days?",
            "reserve_car",
            {"car_class": "compact", "pickup_day": ("tomorrow",), "rental_days": 3},
        ),
        Request(
            "I was wondering if you could look up booking eight five two one.",
            "find_rental",
            {"reservation_number": "8521"},
        ),
        Request(
            "Please extend rental two three zero seven by one day.",
            "extend_rental",
            {"reservation_number": "2307", "extra_days": 1},
        ),
        Request(
            "We're a big family, so we'd like a van for seven days starting Saturday.",
            "reserve_car",
            {"car_class": "van", "pickup_day": ("saturday",), "rental_days": 7},
        ),
        Request(
            "What did I book? My reservation number is nine six one four.",
            "find_rental",
            {"reservation_number": "9614"},
        ),
        Request(
            "Book me an economy car for two days from Monday.",
            "reserve_car",
            {"car_class": "economy", "pickup_day": ("monday",), "rental_days": 2},
        ),
        Request(
            "Can I add three days to reservation three eight two zero?",
            "extend_rental",
            {"reservation_number": "3820", "extra_days": 3},
        ),
    ],
    chat=[
        "Hi, is this Coastline?",
        "How late is the counter open?",
        "Do I get unlimited miles?",
        "Okay, that's all I needed, thanks.",
    ],
)

ASSISTANTS = [PIZZA, DENTAL, HOTEL, BIKES, CARS]

#: Grounding, per assistant: questions its prompt answers (with the words a right answer
#: holds, any of them) and questions it does not (a grounded answer says so). Each is
#: asked as the first turn of a call of its own, as typed text (what is measured is the
#: model, not the ear).
GROUNDING: dict[str, list[tuple[str, tuple[str, ...] | None]]] = {
    "pizza": [
        ("How long does a pickup order take?", ("twenty", "20")),
        ("How much is a small pizza?", ("ten", "10")),
        ("Do you have gluten-free crust?", None),
        ("Can I pay with a check?", None),
    ],
    "dental": [
        ("How long does a cleaning take?", ("forty-five", "forty five", "45")),
        ("Which doctors work there?", ("patel", "nguyen")),
        ("Do you take my insurance, Blue Shield?", None),
        ("How much does a filling cost?", None),
    ],
    "hotel": [
        ("When is breakfast served?", ("seven", "7")),
        ("What time can I check in?", ("three", "3")),
        ("Do you allow dogs?", None),
        ("How much is parking at the hotel?", None),
    ],
    "bikes": [
        ("Are you open on Sundays?", ("closed", "no", "not")),
        ("How long do repairs usually take?", ("two days", "2 days")),
        ("Do you sell electric bikes?", None),
        ("Can you fix a carbon frame?", None),
    ],
    "cars": [
        ("How old do I have to be to rent?", ("twenty-one", "twenty one", "21")),
        ("What kinds of cars do you have?", ("economy", "compact", "suv", "van")),
        ("Do you rent child seats?", None),
        ("How much is the daily rate for an SUV?", None),
    ],
}
#: What a grounded "not in my instructions" answer says.
DONT_KNOW = re.compile(
    r"\b(don'?t know|do not know|not sure|no information|don'?t have (that|any|the)|"
    r"not (able|aware)|unable|can'?t (say|tell|confirm)|cannot (say|tell|confirm)|"
    r"check with|contact|call (us|the)|i'?m (afraid|sorry))",
    re.IGNORECASE,
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- hearing: Piper -> silence framing -> Silero VAD turn -> Whisper -------------------


@dataclass
class Heard:
    line: str
    transcript: str
    segments: int  # VAD turns in the line: more than one means it was cut in the middle


async def hear(piper: PiperTTS, whisper: WhisperSTT, line: str) -> Heard:
    speech = resample(await spoken(piper, line), piper.sample_rate, RATE)
    audio: Samples = np.concatenate(
        [
            np.zeros(int(LEAD_SILENCE * RATE), np.int16),
            speech,
            np.zeros(int(TAIL_SILENCE * RATE), np.int16),
        ]
    )
    detector = TurnDetector(SileroVAD())
    started: int | None = None
    stopped: int | None = None
    segments = 0
    for at in range(0, audio.size, FRAME):
        for change in detector.feed(audio[at : at + FRAME]):
            if change is Activity.STARTED:
                segments += 1
                started = at + FRAME if started is None else started
            elif change is Activity.STOPPED:
                stopped = at + FRAME
    if started is None:
        return Heard(line, "", 0)
    end = stopped if stopped is not None and stopped > started else audio.size
    turn = audio[max(0, started - int(PRE_ROLL * RATE)) : end]
    return Heard(line, await whisper.transcribe(clip(turn)), segments)


# --- the model ---------------------------------------------------------------------------


@dataclass
class Reply:
    said: str
    calls: list[tuple[str, dict[str, Any]]]
    seconds: float


async def ask(
    llm: LlamaCppLLM, assistant: Assistant, history: list[dict[str, Any]], transcript: str
) -> Reply:
    request = LLMRequest(
        messages=[
            {"role": "system", "content": assistant.prompt},
            *history,
            {"role": "user", "content": transcript},
        ],
        tools=assistant.tools,
        temperature=0,
        max_tokens=120,
    )
    started = time.monotonic()
    said: list[str] = []
    calls: list[tuple[str, dict[str, Any]]] = []
    async for chunk in llm.stream(request):
        if isinstance(chunk, TextDelta):
            said.append(chunk.text)
        elif isinstance(chunk, ToolCallRequest):
            calls.append((chunk.name, dict(chunk.arguments)))
        elif isinstance(chunk, ToolCallStarting):
            pass
    return Reply("".join(said).strip(), calls, time.monotonic() - started)


# --- scoring -----------------------------------------------------------------------------


def norm(value: object) -> str:
    return re.sub(r"[\W_]+", "", str(value).lower())


def arg_matches(schema: Mapping[str, Any], expected: Expected, actual: object) -> bool:
    if actual is None:
        return False
    if isinstance(expected, int):
        try:
            return int(float(str(actual).strip())) == expected
        except ValueError:
            return False
    if schema.get("pattern") == "^[0-9]+$":
        return re.sub(r"\D", "", str(actual)) == str(expected)
    if isinstance(expected, str):
        return norm(actual) == norm(expected)
    got = norm(actual)
    return any(norm(alt) and norm(alt) in got for alt in expected)


def call_matches(
    assistant: Assistant, request: Request, name: str, args: Mapping[str, Any]
) -> bool:
    schema = next(t for t in assistant.tools if t["function"]["name"] == request.tool)
    props = schema["function"]["parameters"]["properties"]
    return name == request.tool and all(
        arg_matches(props[key], want, args.get(key)) for key, want in request.args.items()
    )


def lost_by_stt(assistant: Assistant, request: Request, transcript: str) -> list[str]:
    """Expected digits and free-text values the transcript no longer holds (integers and
    enum values are said in words, so they are not looked for)."""
    schema = next(t for t in assistant.tools if t["function"]["name"] == request.tool)
    props = schema["function"]["parameters"]["properties"]
    lost: list[str] = []
    for key, want in request.args.items():
        if props[key].get("pattern") == "^[0-9]+$":
            if str(want) not in re.sub(r"\D", "", transcript):
                lost.append(str(want))
        elif isinstance(want, tuple) and not any(norm(alt) in norm(transcript) for alt in want):
            lost.append(want[0])
    return lost


def tool_talk(assistant: Assistant, said: str) -> bool:
    """Spoken text that reads out the tool machinery."""
    names = [t["function"]["name"] for t in assistant.tools]
    camel = [re.sub(r"_(\w)", lambda m: m.group(1).upper(), n) for n in names]
    words = [*names, *camel, *(n.replace("_", " ") for n in names)]
    words += ["function", "tool call", "arguments", "parameters"]
    pattern = r"\b(" + "|".join(re.escape(w) for w in words) + r")\b|[{`]"
    return re.search(pattern, said, re.IGNORECASE) is not None


@dataclass
class Turn:
    assistant: str
    call: int
    position: int  # of the call's request (chit-chat calls: 1)
    turn: int  # this turn's place in its call
    kind: str  # "request", "chat" (a call of its own) or "lead-in" (before a request)
    line: str
    transcript: str
    said: str
    calls: list[tuple[str, dict[str, Any]]]
    outcome: str  # right, wrong tool, wrong args, no call | ok, spurious
    tool_talk: bool
    seconds: float
    expected: dict[str, Any] = field(default_factory=dict)
    #: Expected values missing from the transcript: a failure Whisper (or Piper) caused.
    lost_by_stt: list[str] = field(default_factory=list)


def request_outcome(assistant: Assistant, request: Request, reply: Reply) -> str:
    if not reply.calls:
        return "no call"
    if any(call_matches(assistant, request, n, a) for n, a in reply.calls[:1]):
        return "right"
    return "wrong args" if reply.calls[0][0] == request.tool else "wrong tool"


# --- running -----------------------------------------------------------------------------


async def run_assistant(
    llm: LlamaCppLLM, assistant: Assistant, heard: Mapping[str, Heard], index: int, first_call: int
) -> list[Turn]:
    turns: list[Turn] = []
    call = first_call

    def note(turn: Turn) -> None:
        turns.append(turn)
        log(
            f"  [{assistant.name} call {call}] turn {turn.turn} {turn.kind}: {turn.outcome}"
            f"{' +tool talk' if turn.tool_talk else ''} ({turn.seconds:.1f} s)"
        )

    async def chat_turn(history: list[dict[str, Any]], line: str, position: int, kind: str) -> None:
        transcript = heard[line].transcript
        reply = await ask(llm, assistant, history, transcript)
        spurious = bool(reply.calls)
        note(
            Turn(
                assistant.name,
                call,
                position,
                len(history) // 2 + 1,
                kind,
                line,
                transcript,
                reply.said,
                reply.calls,
                "spurious" if spurious else "ok",
                tool_talk(assistant, reply.said),
                reply.seconds,
            )
        )
        history.append({"role": "user", "content": transcript})
        history.append({"role": "assistant", "content": SORRY if spurious else reply.said})

    for line in assistant.chat:
        call += 1
        await chat_turn([], line, 1, "chat")
    for i, request in enumerate(assistant.requests):
        call += 1
        position = POSITIONS[(index + i) % len(POSITIONS)]
        history: list[dict[str, Any]] = []
        for k in range(position - 1):
            await chat_turn(
                history, assistant.chat[(i + k) % len(assistant.chat)], position, "lead-in"
            )
        transcript = heard[request.line].transcript
        reply = await ask(llm, assistant, history, transcript)
        note(
            Turn(
                assistant.name,
                call,
                position,
                position,
                "request",
                request.line,
                transcript,
                reply.said,
                reply.calls,
                request_outcome(assistant, request, reply),
                tool_talk(assistant, reply.said),
                reply.seconds,
                {"tool": request.tool, "arguments": dict(request.args)},
                lost_by_stt(assistant, request, transcript),
            )
        )
    return turns


async def grounding(llm: LlamaCppLLM, assistant: Assistant) -> list[dict[str, Any]]:
    """Each grounding question, asked as a call's first turn: answered from the prompt,
    "I don't know" where the prompt is silent, or invented."""
    out = []
    for question, facts in GROUNDING.get(assistant.name, []):
        reply = await ask(llm, assistant, [], question)
        said = reply.said.lower()
        if reply.calls:
            verdict = "called a tool"
        elif facts is not None:
            verdict = "answered" if any(f in said for f in facts) else "wrong"
        else:
            verdict = "said unknown" if DONT_KNOW.search(said) else "invented"
        out.append(
            {"assistant": assistant.name, "question": question, "known": facts is not None}
            | {"said": reply.said, "calls": reply.calls, "verdict": verdict}
        )
        log(f"  [{assistant.name} grounding] {question!r}: {verdict}")
    return out


def grounding_report(results: list[dict[str, Any]]) -> dict[str, Any]:
    known = [r for r in results if r["known"]]
    unknown = [r for r in results if not r["known"]]
    summary = {
        "known": len(known),
        "answered": sum(r["verdict"] == "answered" for r in known),
        "unknown": len(unknown),
        "said_unknown": sum(r["verdict"] == "said unknown" for r in unknown),
        "invented": sum(r["verdict"] == "invented" for r in unknown),
        "called_a_tool": sum(r["verdict"] == "called a tool" for r in results),
    }
    said_so, invented = summary["said_unknown"], summary["invented"]
    print(
        f"grounding: answered from the prompt {pct(summary['answered'], len(known))} of "
        f"{len(known)}; where the prompt is silent, said so {pct(said_so, len(unknown))}, "
        f"invented {pct(invented, len(unknown))} of {len(unknown)}; "
        f"called a tool {summary['called_a_tool']}"
    )
    for r in results:
        if r["verdict"] not in ("answered", "said unknown"):
            print(
                f"  {r['assistant']:<7} {r['verdict']:<14} {r['question']!r} -> {r['said'][:120]!r}"
            )
    return {"summary": summary, "questions": results}


# --- report ------------------------------------------------------------------------------


def summarize(turns: Iterable[Turn]) -> dict[str, Any]:
    turns = list(turns)
    requests = [t for t in turns if t.kind == "request"]
    chat = [t for t in turns if t.kind != "request"]
    count = {o: sum(t.outcome == o for t in requests) for o in ("right", "wrong tool")}
    count |= {o: sum(t.outcome == o for t in requests) for o in ("wrong args", "no call")}
    return {
        "requests": len(requests),
        **count,
        "right_rate": count["right"] / len(requests) if requests else None,
        "chat_turns": len(chat),
        "spurious": sum(t.outcome == "spurious" for t in chat),
        "spurious_rate": (sum(t.outcome == "spurious" for t in chat) / len(chat)) if chat else None,
        "lost_by_stt": sum(bool(t.lost_by_stt) for t in requests),
        "lost_by_stt_right": sum(bool(t.lost_by_stt) and t.outcome == "right" for t in requests),
        "turns": len(turns),
        "tool_talk": sum(t.tool_talk for t in turns),
        "tool_talk_rate": sum(t.tool_talk for t in turns) / len(turns) if turns else None,
    }


def pct(part: int, whole: int) -> str:
    return f"{part:3d} ({100 * part / whole:5.1f}%)" if whole else "  -"


def row(label: str, s: Mapping[str, Any]) -> str:
    n, c, t = s["requests"], s["chat_turns"], s["turns"]
    return (
        f"{label:<12}{n:>5}  {pct(s['right'], n):>13}  {s['wrong tool']:>5}  "
        f"{s['wrong args']:>5}  {s['no call']:>5} |{c:>5}  {pct(s['spurious'], c):>13} |"
        f"{t:>6}  {pct(s['tool_talk'], t):>13}"
    )


def describe(turn: Turn) -> str:
    parts = []
    for name, args in turn.calls:
        parts.append(f"called {name}({json.dumps(args, ensure_ascii=False)})")
    if turn.said:
        said = turn.said if len(turn.said) <= 160 else turn.said[:160] + "..."
        parts.append(f"said {said!r}")
    what = "; ".join(parts) or "said nothing"
    if turn.kind == "request" and turn.outcome != "right":
        exp = turn.expected
        what += f"  [expected {exp['tool']}({json.dumps(exp['arguments'])})]"
    return what


def report(
    turns: list[Turn], heard: Mapping[str, Heard], assistants: Sequence[Assistant], seconds: float
) -> dict[str, Any]:
    overall = summarize(turns)
    per_assistant = {
        a.name: summarize(t for t in turns if t.assistant == a.name) for a in assistants
    }
    per_position = {p: summarize(t for t in turns if t.position == p) for p in POSITIONS}
    split = [h for h in heard.values() if h.segments != 1]
    print(
        f"tool use: {MODEL} (llama.cpp, temperature 0) on Piper -> Silero VAD -> Whisper "
        f"tiny.en transcripts; {len(assistants)} assistants, {len(heard)} lines heard "
        f"({len(split)} cut by the VAD into other than one turn), {seconds:.0f} s"
    )
    print(
        f"{'':<12}{'reqs':>5}  {'right':>13}  {'wrong':>5}  {'wrong':>5}  {'no':>5} |"
        f"{'chat':>5}  {'spurious':>13} |{'turns':>6}  {'tool talk':>13}"
    )
    print(
        f"{'':<12}{'':>5}  {'(>= 95%)':>13}  {'tool':>5}  {'args':>5}  {'call':>5} |"
        f"{'turns':>5}  {'(<= 2%)':>13} |{'':>6}  {'(0)':>13}"
    )
    print(row("all", overall))
    for name, s in per_assistant.items():
        print(row(name, s))
    for p, s in per_position.items():
        print(row(f"position {p}", s))
    print(
        "(a position row is the calls whose request is that turn; the chit-chat calls of "
        "their own count as position 1)"
    )
    print(
        f"requests whose transcript lost an expected value: {overall['lost_by_stt']} "
        f"(right anyway: {overall['lost_by_stt_right']})"
    )
    failures = [t for t in turns if t.outcome not in ("right", "ok") or t.tool_talk]
    print(f"failures ({len(failures)}):")
    for t in failures:
        label = t.outcome + (", tool talk" if t.tool_talk else "")
        if t.lost_by_stt:
            label += f", transcript lacks {', '.join(t.lost_by_stt)}"
        print(
            f"  {t.assistant:<7} pos {t.position} turn {t.turn} {t.kind:<8} [{label}] "
            f"{t.transcript!r} -> {describe(t)}"
        )
    for h in split:
        print(f"  VAD: {h.line!r} heard as {h.segments} turns -> {h.transcript!r}")
    return {
        "model": MODEL,
        "seconds": seconds,
        "summary": {
            "all": overall,
            "assistants": per_assistant,
            "positions": {str(p): s for p, s in per_position.items()},
        },
        "lines": [asdict(h) for h in heard.values()],
        "turns": [asdict(t) for t in turns],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--assistants", type=int, default=len(ASSISTANTS))
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    assistants = ASSISTANTS[: max(1, args.assistants)]
    began = time.monotonic()
    log("loading Piper, Whisper and the model ...")
    piper, whisper = PiperTTS(), WhisperSTT()
    llm = LlamaCppLLM(resolve_model(MODEL))
    heard: dict[str, Heard] = {}
    turns: list[Turn] = []
    call = 0
    for index, assistant in enumerate(assistants):
        lines = [r.line for r in assistant.requests] + assistant.chat
        log(f"{assistant.name}: hearing {len(lines)} lines")
        for line in lines:
            heard[line] = await hear(piper, whisper, line)
            log(f"  {line!r} -> {heard[line].transcript!r}")
        log(f"{assistant.name}: asking the model")
        done = await run_assistant(llm, assistant, heard, index, call)
        call += len(assistant.chat) + len(assistant.requests)
        turns.extend(done)
    grounded = [r for a in assistants for r in await grounding(llm, a)]
    llm.close()
    results = report(turns, heard, assistants, time.monotonic() - began)
    results["grounding"] = grounding_report(grounded)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))
        log(f"wrote {args.json}")


if __name__ == "__main__":
    asyncio.run(main())
