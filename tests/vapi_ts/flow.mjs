// Vapi's official TypeScript server SDK (@vapi-ai/server-sdk) drives a real backchannel
// server with only the base URL and the key changed: it creates an async function tool
// and an assistant that uses it by `toolIds`, creates a call with
// `assistantOverrides.variableValues`, runs the call over backchannel's client socket
// (the model calls the tool; its result is posted later with the call's token), ends it,
// and reads everything back. Run by tests/test_vapi_ts_sdk.py.
//
// Environment: BASE_URL (the server), API_KEY (its API key), TOOLS_URL (the tool server).
// Success: one JSON line {"ok": true, ...} on stdout, exit 0. Failure: a message on
// stderr, exit 1. Every wait is bounded.

import { VapiClient, VapiError } from "@vapi-ai/server-sdk";
import WebSocket from "ws";

const WAIT_MS = 30_000;
const TOTAL_MS = 80_000;

function env(name) {
  const value = process.env[name];
  if (!value) fail(`${name} is not set`);
  return value.replace(/\/+$/, "");
}

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** The fields every Vapi resource answers with. */
function checkResource(what, resource) {
  for (const field of ["id", "orgId", "createdAt", "updatedAt"]) {
    check(
      typeof resource?.[field] === "string",
      `${what}: field ${field} missing or not a string in ${JSON.stringify(resource)}`,
    );
  }
}

/** A client socket that keeps every event, and waits (bounded) for one that matches. */
class Session {
  constructor(ws) {
    this.ws = ws;
    this.events = [];
    this.waiters = [];
    this.closed = null;
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      let event;
      try {
        event = JSON.parse(data.toString());
      } catch {
        return;
      }
      this.events.push(event);
      for (const w of [...this.waiters]) {
        if (w.predicate(event)) w.resolve(event);
      }
    });
    ws.on("close", (code, reason) => {
      this.closed = `socket closed (${code} ${reason})`;
      for (const w of [...this.waiters]) w.reject(new Error(`${w.label}: ${this.closed}`));
    });
  }

  static open(url) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`client socket did not open in ${WAIT_MS / 1000} s`));
      }, WAIT_MS);
      ws.once("open", () => {
        clearTimeout(timer);
        resolve(new Session(ws));
      });
      ws.once("error", (err) => {
        clearTimeout(timer);
        reject(new Error(`client socket: ${err.message}`));
      });
      ws.once("unexpected-response", (_req, res) => {
        clearTimeout(timer);
        reject(new Error(`client socket refused: HTTP ${res.statusCode}`));
      });
    });
  }

  send(message) {
    this.ws.send(JSON.stringify(message));
  }

  until(label, predicate, within = WAIT_MS) {
    const seen = this.events.find(predicate);
    if (seen) return Promise.resolve(seen);
    if (this.closed) return Promise.reject(new Error(`${label}: ${this.closed}`));
    return new Promise((resolve, reject) => {
      const waiter = { label, predicate };
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== waiter);
      };
      const timer = setTimeout(() => {
        done();
        const last = this.events
          .slice(-12)
          .map((e) => [e.type, e.transcript ?? e.status ?? e.error ?? null]);
        reject(new Error(`${label}: nothing in ${within / 1000} s; last events ${JSON.stringify(last)}`));
      }, within);
      waiter.resolve = (event) => {
        done();
        resolve(event);
      };
      waiter.reject = (err) => {
        done();
        reject(err);
      };
      this.waiters.push(waiter);
    });
  }

  close() {
    this.ws.close();
  }
}

const said = (text) => (e) =>
  e.type === "transcript" && e.role === "assistant" && String(e.transcript).includes(text);

async function main() {
  const baseUrl = env("BASE_URL");
  const apiKey = env("API_KEY");
  const toolsUrl = env("TOOLS_URL");
  const sdk = new VapiClient({ token: apiKey, environment: baseUrl, timeoutInSeconds: 30 });

  const tool = await sdk.tools.create({
    type: "function",
    async: true,
    function: {
      name: "check_order",
      description: "Look up an order",
      parameters: { type: "object", properties: {} },
    },
    server: { url: `${toolsUrl}/tools` },
  });
  checkResource("tools.create", tool);
  check(tool.type === "function" && tool.async === true, `tools.create: ${JSON.stringify(tool)}`);

  const assistant = await sdk.assistants.create({
    name: "Order desk",
    firstMessage: "Hello {{name}}, order desk.",
    model: {
      provider: "openai",
      model: "gpt-4o",
      messages: [{ role: "system", content: "You help {{name}}." }],
      toolIds: [tool.id],
    },
    server: { url: `${toolsUrl}/events` },
    serverMessages: ["end-of-call-report", "status-update"],
  });
  checkResource("assistants.create", assistant);
  const fetched = await sdk.assistants.get({ id: assistant.id });
  check(
    fetched.name === "Order desk" && fetched.model?.toolIds?.includes(tool.id),
    `assistants.get: ${JSON.stringify(fetched)}`,
  );

  const call = await sdk.calls.create({
    assistantId: assistant.id,
    assistantOverrides: { variableValues: { name: "Ada" } },
  });
  checkResource("calls.create", call);
  check(call.assistantId === assistant.id, `calls.create: assistantId ${call.assistantId}`);
  // backchannel's fields beside Vapi's: the SDK passes the answer's JSON through as is.
  for (const field of ["clientUrl", "clientToken", "token"]) {
    check(typeof call[field] === "string", `calls.create: no ${field} in ${JSON.stringify(call)}`);
  }

  const s = await Session.open(`${call.clientUrl}?token=${encodeURIComponent(call.clientToken)}`);
  let toolCallId;
  let result;
  try {
    await s.until("first message", said("Hello Ada, order desk."));
    s.send({ type: "user-message", content: "Check my order." });
    const calls = await s.until(
      "tool-calls for check_order",
      (e) =>
        e.type === "tool-calls" &&
        (e.toolCallList ?? []).some((t) => t.function?.name === "check_order"),
    );
    toolCallId = calls.toolCallList.find((t) => t.function.name === "check_order").id;

    const posted = await fetch(
      `${baseUrl}/calls/${encodeURIComponent(call.id)}/tool-calls/${encodeURIComponent(toolCallId)}/result`,
      {
        method: "POST",
        headers: { authorization: `Bearer ${call.token}`, "content-type": "application/json" },
        body: JSON.stringify({ result: "shipped" }),
        signal: AbortSignal.timeout(WAIT_MS),
      },
    );
    const text = await posted.text();
    check(posted.ok, `POST tool-call result: HTTP ${posted.status} ${text}`);
    result = JSON.parse(text);
    check(result.outcome === "accepted", `POST tool-call result: ${text}`);

    await s.until("assistant says the result", said("shipped"));
    s.send({ type: "end-call" });
    await s.until(
      "status-update ended",
      (e) => e.type === "status-update" && e.status === "ended",
    );
  } finally {
    s.close();
  }

  const ended = await sdk.calls.get({ id: call.id });
  checkResource("calls.get", ended);
  check(ended.status === "ended", `calls.get: status ${ended.status}, expected ended`);
  check(
    ended.endedReason === "ended-by-control",
    `calls.get: endedReason ${ended.endedReason}, expected ended-by-control`,
  );
  const listedCalls = await sdk.calls.list();
  check(listedCalls.some((c) => c.id === call.id), "calls.list: the call is missing");

  const listedTools = await sdk.tools.list();
  check(listedTools.some((t) => t.id === tool.id), "tools.list: the tool is missing");
  listedTools.forEach((t) => checkResource("tools.list", t));
  const listedAssistants = await sdk.assistants.list();
  check(
    listedAssistants.some((a) => a.id === assistant.id),
    "assistants.list: the assistant is missing",
  );
  listedAssistants.forEach((a) => checkResource("assistants.list", a));

  const number = await sdk.phoneNumbers.create({
    provider: "twilio",
    number: "+15551230000",
    twilioAccountSid: "AC00000000000000000000000000000000",
    assistantId: assistant.id,
  });
  checkResource("phoneNumbers.create", number);
  const numbers = await sdk.phoneNumbers.list();
  check(numbers.some((n) => n.id === number.id), "phoneNumbers.list: the number is missing");

  const deleted = await sdk.tools.delete({ id: tool.id });
  check(deleted.id === tool.id, `tools.delete: ${JSON.stringify(deleted)}`);
  let status;
  try {
    await sdk.tools.get({ id: tool.id });
  } catch (err) {
    status = err instanceof VapiError ? err.statusCode : err;
  }
  check(status === 404, `tools.get after delete: expected a 404, got ${status ?? "the tool"}`);

  console.log(
    JSON.stringify({
      ok: true,
      callId: call.id,
      toolId: tool.id,
      assistantId: assistant.id,
      toolCallId,
      resultOutcome: result.outcome,
      endedReason: ended.endedReason,
      phoneNumberId: number.id,
      events: s.events.length,
    }),
  );
}

const guard = setTimeout(() => fail(`the flow took over ${TOTAL_MS / 1000} s`), TOTAL_MS);
try {
  await main();
  clearTimeout(guard);
  process.exit(0);
} catch (err) {
  if (err instanceof VapiError) {
    fail(`SDK request failed: HTTP ${err.statusCode}: ${JSON.stringify(err.body)}\n${err.stack}`);
  }
  fail(err?.stack ?? String(err));
}
