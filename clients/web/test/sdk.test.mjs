// The SDK's own tests, in node with a fake socket: events by Vapi's names, control
// messages, client tools (a value, a thrown error, progress then the final result).
import assert from "node:assert/strict";
import { test } from "node:test";

import Backchannel, { Result } from "../dist/backchannel.js";

class FakeSocket {
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.last = this;
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.();
    }, 0);
  }
  send(data) {
    this.sent.push(typeof data === "string" ? JSON.parse(data) : data);
  }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  serve(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
}

const handle = { clientUrl: "ws://server/calls/c1/ws", clientToken: "cc_abc" };
const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

async function started(events = []) {
  const call = new Backchannel(undefined, "http://server", { WebSocket: FakeSocket });
  for (const name of ["call-start", "call-end", "speech-start", "speech-end", "message", "error"]) {
    call.on(name, (...args) => events.push([name, ...args]));
  }
  await call.start(handle, undefined, { type: "text" });
  return [call, FakeSocket.last];
}

test("start connects with the client token and emits call-start", async () => {
  const events = [];
  const [, socket] = await started(events);
  assert.equal(socket.url, "ws://server/calls/c1/ws?token=cc_abc");
  assert.deepEqual(events, [["call-start"]]);
});

test("start from an assistant id creates the call with the API key", async () => {
  const requests = [];
  const fetch = async (url, init) => {
    requests.push([url, init]);
    return new Response(JSON.stringify({ id: "c2", type: "text", ...handle }), { status: 201 });
  };
  const call = new Backchannel("bc_key", "http://server/", { WebSocket: FakeSocket, fetch });
  const made = await call.start("asst_1", { variableValues: { name: "Ada" } }, { type: "text" });
  const [url, init] = requests[0];
  assert.equal(url, "http://server/calls");
  assert.equal(init.headers.authorization, "Bearer bc_key");
  assert.deepEqual(JSON.parse(init.body), {
    assistantId: "asst_1",
    assistantOverrides: { variableValues: { name: "Ada" } },
    type: "text",
  });
  assert.equal(made.id, "c2");
});

test("a refused call creation is an error event with the server's code", async () => {
  const fetch = async () =>
    new Response(JSON.stringify({ error: { code: "unauthorized", message: "wrong key" } }), { status: 401 });
  const call = new Backchannel("bad", "http://server", { WebSocket: FakeSocket, fetch });
  const errors = [];
  call.on("error", (e) => errors.push(e));
  assert.equal(await call.start("asst_1", undefined, { type: "text" }), null); // as Vapi's
  assert.deepEqual(errors, [{ code: "unauthorized", message: "wrong key" }]);
});

test("server events come as message, speech-start/-end and error", async () => {
  const events = [];
  const [, socket] = await started(events);
  socket.serve({ type: "speech-update", role: "assistant", status: "started" });
  socket.serve({ type: "speech-update", role: "user", status: "started" });
  socket.serve({ type: "speech-update", role: "assistant", status: "stopped" });
  socket.serve({ type: "error", error: { code: "invalid_message", message: "no" } });
  const names = events.map(([name]) => name);
  assert.deepEqual(names, [
    "call-start",
    "message",
    "speech-start",
    "message",
    "message",
    "speech-end",
    "message",
    "error",
  ]);
  assert.deepEqual(events.at(-1), ["error", { code: "invalid_message", message: "no" }]);
});

test("send, say, setMuted and end speak the client protocol", async () => {
  const events = [];
  const [call, socket] = await started(events);
  call.send({ type: "add-message", message: { role: "system", content: "VIP" }, triggerResponseEnabled: false });
  call.say("One moment.", true);
  call.send({ type: "control", control: "mute-assistant" });
  assert.equal(call.isMuted(), false);
  call.setMuted(true);
  assert.equal(call.isMuted(), true);
  call.end();
  assert.deepEqual(socket.sent, [
    { type: "add-message", message: { role: "system", content: "VIP" }, triggerResponseEnabled: false },
    {
      type: "say",
      content: "One moment.",
      endCallAfterSpoken: true,
      interruptionsEnabled: false,
      interruptAssistantEnabled: false,
    },
    { type: "control", control: "mute-assistant" },
    { type: "end-call" },
  ]);
  assert.deepEqual(events.at(-1), ["call-end"]);
});

test("a client tool's value, however late, becomes its tool-call-result", async () => {
  const [call, socket] = await started();
  const seen = [];
  call.clientTool("get_style", async (args, tool) => {
    seen.push([args, tool.toolCallId, tool.name]);
    await tick(30);
    return { template: "bold" };
  });
  socket.serve({
    type: "tool-calls",
    toolCallList: [
      { id: "call_1", type: "function", function: { name: "get_style", arguments: '{"user": "ada"}' }, route: "client" },
      { id: "call_2", function: { name: "check_order", arguments: "{}" }, route: "server" },
    ],
  });
  await tick(10);
  assert.deepEqual(socket.sent, []); // not yet
  await tick(40);
  assert.deepEqual(seen, [[{ user: "ada" }, "call_1", "get_style"]]);
  assert.deepEqual(socket.sent, [
    { type: "tool-call-result", toolCallId: "call_1", name: "get_style", result: { template: "bold" } },
  ]);
});

test("a thrown error becomes the result's error; progress goes first with willContinue", async () => {
  const [call, socket] = await started();
  call.clientTool("upload", async (_args, tool) => {
    tool.progress({ pct: 50 }, "Halfway there.");
    await tick(5);
    return Result.of("done", { message: "Uploaded.", delivery: "interrupt" });
  });
  call.clientTool("broken", () => {
    throw new Error("no camera");
  });
  socket.serve({
    type: "tool-calls",
    toolCallList: [
      { id: "u1", name: "upload", arguments: {}, route: "client" },
      { id: "b1", name: "broken", arguments: {}, route: "client" },
    ],
  });
  await tick(20);
  assert.deepEqual(socket.sent, [
    { type: "tool-call-result", toolCallId: "u1", name: "upload", result: { pct: 50 }, willContinue: true, message: "Halfway there." },
    { type: "tool-call-result", toolCallId: "b1", name: "broken", error: "no camera" },
    { type: "tool-call-result", toolCallId: "u1", name: "upload", message: "Uploaded.", delivery: "interrupt", result: "done" },
  ]);
});

test("a listener that throws does not stop the others", async () => {
  const call = new Backchannel(undefined, "http://server", { WebSocket: FakeSocket });
  const heard = [];
  const original = console.error;
  console.error = () => {};
  try {
    call.on("call-start", () => {
      throw new Error("app bug");
    });
    call.on("call-start", () => heard.push("second"));
    await call.start(handle, undefined, { type: "text" });
  } finally {
    console.error = original;
  }
  assert.deepEqual(heard, ["second"]);
});

test("a token the server refuses is an error and no call-start", async () => {
  class Refusing extends FakeSocket {
    constructor(url) {
      super(url);
      setTimeout(() => this.close(4401, "unauthorized"), 5);
    }
  }
  const call = new Backchannel(undefined, "http://server", { WebSocket: Refusing });
  const events = [];
  for (const name of ["call-start", "call-end", "error"]) call.on(name, (...args) => events.push([name, ...args]));
  assert.equal(await call.start(handle, undefined, { type: "text" }), null);
  assert.deepEqual(events, [["error", { code: "unauthorized", message: "the server closed the call's socket (4401)" }]]);
});

test("a call starts as soon as the server speaks, and its handle's type decides the audio", async () => {
  const call = new Backchannel(undefined, "http://server", { WebSocket: FakeSocket });
  const starting = call.start({ ...handle, type: "text" }); // no AudioContext in node: text
  await tick(1);
  FakeSocket.last.serve({ type: "status-update", status: "in-progress" });
  assert.deepEqual(await starting, { ...handle, type: "text" });
});

test("arguments that are not JSON answer the tool with an error, not silence", async () => {
  const [call, socket] = await started();
  call.clientTool("get_style", () => "never");
  socket.serve({ type: "tool-calls", toolCallList: [{ id: "x1", function: { name: "get_style", arguments: "{oops" }, route: "client" }] });
  await tick(5);
  assert.equal(socket.sent.length, 1);
  assert.equal(socket.sent[0].toolCallId, "x1");
  assert.match(socket.sent[0].error, /JSON/);
});

test("a lost connection is restored, and a result given meanwhile goes through", async () => {
  const events = [];
  const [call, first] = await started(events);
  call.clientTool("slow", async () => {
    await tick(50);
    return "late";
  });
  first.serve({ type: "tool-calls", toolCallList: [{ id: "s1", name: "slow", arguments: {}, route: "client" }] });
  first.close(1006); // the network, not the end of the call
  await tick(400);
  const second = FakeSocket.last;
  assert.notEqual(second, first);
  assert.equal(second.url, first.url);
  assert.deepEqual(second.sent, [{ type: "tool-call-result", toolCallId: "s1", name: "slow", result: "late" }]);
  assert.deepEqual(events.map(([name]) => name), ["call-start", "message"]); // no call-end
  second.close(1000); // the server ends the call
  assert.deepEqual(events.at(-1), ["call-end"]);
});
