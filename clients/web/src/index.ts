/**
 * backchannel's browser SDK: one call at a time, over the call's WebSocket.
 *
 * Its surface follows Vapi's Web SDK (`new Vapi(token, baseUrl)`, `start`, `stop`,
 * `send`, `say`, `setMuted`, `isMuted`, `end`, and the events `call-start`,
 * `call-end`, `speech-start`, `speech-end`, `volume-level`, `message`, `error`), so its
 * users recognise it. Beyond Vapi: client tools in one line (`clientTool(name,
 * handler)`), whose return value, thrown error or progress updates become the
 * `tool-call-result` for that call, however late they come.
 */

import { Emitter, type Listener } from "./emitter";
import { Microphone, Speaker } from "./audio";

export type { Listener } from "./emitter";

/** The events a call emits, by Vapi's Web SDK names. */
export type CallEvents = {
  /** The call's socket is open: the call has started. */
  "call-start": [];
  /** The call is over (ended by either side, or the connection was lost). */
  "call-end": [];
  /** The assistant started speaking. */
  "speech-start": [];
  /** The assistant stopped speaking. */
  "speech-end": [];
  /** The assistant's audio level, 0 to 1, about ten times a second while it plays. */
  "volume-level": [level: number];
  /** Every event the server sends (Vapi's names: `transcript`, `tool-calls`, `status-update`, …). */
  message: [message: ServerMessage];
  /** Something went wrong: the server's `{code, message}`, or a local failure. */
  error: [error: CallError];
};

export interface ServerMessage {
  type: string;
  [key: string]: unknown;
}

export interface CallError {
  code: string;
  message: string;
  [key: string]: unknown;
}

/** What the app may send (see docs/client-protocol.md). */
export type ClientMessage =
  | { type: "add-message"; message: { role: string; content: string }; triggerResponseEnabled?: boolean }
  | { type: "control"; control: "mute-assistant" | "unmute-assistant" | "mute-customer" | "unmute-customer" | "say-first-message" }
  | { type: "say"; content: string; endCallAfterSpoken?: boolean; interruptAssistantEnabled?: boolean; interruptionsEnabled?: boolean }
  | { type: "end-call" }
  | { type: "user-message"; content: string }
  | ({ type: "tool-call-result"; toolCallId: string } & ToolCallResult);

export interface ToolCallResult {
  name?: string;
  result?: unknown;
  error?: string;
  message?: string | { type: string; content: string };
  delivery?: "silent" | "when-idle" | "interrupt";
  willContinue?: boolean;
  metadata?: Record<string, unknown>;
}

/** What a client tool's handler is given besides the call's arguments. */
export interface ToolCall {
  toolCallId: string;
  name: string;
  /** Send a progress update now (`willContinue`); the handler's return value comes later. */
  progress(result: unknown, message?: string): void;
}

/**
 * A client tool: its return value (awaited) becomes the result, a thrown error the
 * result's `error`. Return `Result.of(value, {message, delivery})` to set more than the value.
 */
export type ToolHandler = (args: Record<string, unknown>, call: ToolCall) => unknown;

/** A call your backend created (`POST /calls` with the API key): the page needs only these. */
export interface CallHandle {
  id?: string;
  clientUrl: string;
  clientToken: string;
  /** `web` (audio) or `text`, as the call was created; `POST /calls` answers it. */
  type?: "web" | "text";
}

export interface StartOptions {
  /** `web`: microphone and speaker; `text`: typed turns only. Default: the handle's
   * `type`, else `web`. */
  type?: "web" | "text";
}

/** The rate the SDK records and plays at: the server's own, so nothing is resampled there. */
export const SAMPLE_RATE = 16000;
/** How long after the socket opens a call counts as started if the server has sent
 * nothing yet (a refused token closes the socket at once instead). */
const SETTLE_MS = 500;
/** A connection lost without the call ending is tried again for this long (within the
 * server's grace period, 10 s by default), once a second; meanwhile what the app sends
 * (a tool's result above all) waits, and the server keeps what it says. */
export const RECONNECT_MS = 8000;

export interface BackchannelOptions {
  /** For tests and non-browser runtimes. */
  WebSocket?: { new (url: string): WebSocket };
  fetch?: typeof fetch;
}

/** A result with more than a value: `return Result.of(value, {message: "…"})`. */
export class Result {
  constructor(readonly fields: ToolCallResult) {}
  static of(result: unknown, fields: Omit<ToolCallResult, "result"> = {}): Result {
    return new Result({ ...fields, result });
  }
}

export default class Backchannel extends Emitter<CallEvents> {
  private readonly baseUrl: string;
  private readonly tools = new Map<string, ToolHandler>();
  private readonly WebSocketImpl: { new (url: string): WebSocket };
  private readonly fetchImpl: typeof fetch;
  private socket: WebSocket | null = null;
  private microphone: Microphone | null = null;
  private speaker: Speaker | null = null;
  private context: AudioContext | null = null;
  private muted = false;
  private live = false;
  private ending = false;
  private reconnecting = false;
  private waiting: ClientMessage[] = [];

  /**
   * @param apiToken The server's API key, to create calls from the browser (development;
   *   in production your backend creates the call and hands the page a {@link CallHandle}).
   * @param apiBaseUrl The server's URL (default: this page's origin).
   */
  constructor(
    private readonly apiToken?: string,
    apiBaseUrl?: string,
    options: BackchannelOptions = {},
  ) {
    super();
    this.baseUrl = (apiBaseUrl ?? globalThis.location?.origin ?? "").replace(/\/$/, "");
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** Answer calls of the client tool `name` with `handler`. */
  clientTool(name: string, handler: ToolHandler): this {
    this.tools.set(name, handler);
    return this;
  }

  /**
   * Start a call: from a stored assistant's id, an inline assistant (Vapi's JSON), or a
   * call your backend created. Resolves with the call once it is live; like Vapi's SDK,
   * with `null` (and an `error` event) if it could not start.
   */
  async start(
    assistant: string | Record<string, unknown> | CallHandle,
    assistantOverrides?: Record<string, unknown>,
    options: StartOptions = {},
  ): Promise<CallHandle | null> {
    if (this.socket) {
      this.fail("call_already_running", "a call is already running; stop() it first");
      return null;
    }
    this.ending = false;
    try {
      const type = options.type ?? (isHandle(assistant) ? assistant.type : undefined) ?? "web";
      const handle = isHandle(assistant) ? assistant : await this.createCall(assistant, assistantOverrides, type);
      let url = `${handle.clientUrl}?token=${encodeURIComponent(handle.clientToken)}`;
      if (type === "web") {
        this.context = new AudioContext({ sampleRate: SAMPLE_RATE });
        this.speaker = new Speaker(this.context, (level) => this.emit("volume-level", level));
        this.microphone = await Microphone.open(this.context, (pcm) => this.sendAudio(pcm));
        url += `&sampleRate=${Math.round(this.context.sampleRate)}`;
      }
      await this.connect(url);
      return handle;
    } catch (error) {
      (this.socket as WebSocket | null)?.close();
      this.socket = null;
      this.release();
      const failure = error as CallError;
      if (failure?.code) this.emit("error", failure);
      else this.fail("call_start_failed", error);
      return null;
    }
  }

  private connect(url: string): Promise<void> {
    const socket = new this.WebSocketImpl(url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const live = () => {
        if (settled) return;
        settled = true;
        this.live = true;
        this.emit("call-start");
        resolve();
      };
      socket.onopen = () => setTimeout(live, SETTLE_MS);
      socket.onerror = () => {
        if (settled) this.fail("socket_error", "the call's connection failed");
      };
      socket.onclose = (event: CloseEvent) => {
        if (!settled) {
          settled = true;
          // 4401 wrong token, 4404 no such call, 4409 already connected (see the protocol).
          reject({ code: event?.reason || `closed_${event?.code ?? "early"}`, message: `the server closed the call's socket (${event?.code})` });
          return;
        }
        this.dropped(url, event?.code ?? 1006);
      };
      socket.onmessage = (event: MessageEvent) => {
        live();
        this.received(event.data);
      };
    });
  }

  /** End the call and let go of the microphone. */
  stop(): void {
    this.end();
  }

  /** End the call (Vapi's `end`): the assistant stops, the server reports the call. */
  end(): void {
    this.ending = true;
    if (this.socket && this.socket.readyState === 1) this.send({ type: "end-call" });
    this.socket?.close(1000);
    this.release();
  }

  /** Send a control message, a typed turn, or a tool result. */
  send(message: ClientMessage): void {
    if (this.reconnecting) {
      this.waiting.push(message); // sent once the connection is back
      return;
    }
    if (!this.socket || this.socket.readyState !== 1) {
      this.fail("not_connected", `cannot send ${message.type}: no call is running`);
      return;
    }
    this.socket.send(JSON.stringify(message));
  }

  /** Have the assistant say `message` (Vapi's `say`). */
  say(message: string, endCallAfterSpoken = false, interruptionsEnabled = false, interruptAssistantEnabled = false): void {
    this.send({ type: "say", content: message, endCallAfterSpoken, interruptionsEnabled, interruptAssistantEnabled });
  }

  /** Mute the user's microphone: nothing is sent while muted. */
  setMuted(muted: boolean): void {
    this.muted = muted;
  }

  isMuted(): boolean {
    return this.muted;
  }

  // -- inside ------------------------------------------------------------------------

  private async createCall(
    assistant: string | Record<string, unknown>,
    assistantOverrides: Record<string, unknown> | undefined,
    type: string,
  ): Promise<CallHandle> {
    if (!this.apiToken) {
      throw { code: "api_key_needed", message: "creating a call needs the API key; or pass a call your backend created" } as CallError;
    }
    const body: Record<string, unknown> = typeof assistant === "string" ? { assistantId: assistant } : { assistant };
    if (assistantOverrides) body.assistantOverrides = assistantOverrides;
    body.type = type;
    const response = await this.fetchImpl(`${this.baseUrl}/calls`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${this.apiToken}` },
      body: JSON.stringify(body),
    });
    const data = (await response.json()) as Record<string, any>;
    if (!response.ok) throw (data?.error ?? { code: "http_error", message: response.statusText }) as CallError;
    return { id: data.id, clientUrl: data.clientUrl, clientToken: data.clientToken, type: data.type };
  }

  private sendAudio(pcm: Int16Array): void {
    if (!this.muted && this.socket && this.socket.readyState === 1) this.socket.send(pcm.buffer);
  }

  private received(data: unknown): void {
    if (typeof data !== "string") {
      this.speaker?.play(data as ArrayBuffer);
      return;
    }
    let message: ServerMessage;
    try {
      message = JSON.parse(data);
    } catch {
      this.fail("invalid_event", "the server sent a frame that is not JSON");
      return;
    }
    this.emit("message", message);
    switch (message.type) {
      case "speech-update":
        if (message.role === "assistant") this.emit(message.status === "started" ? "speech-start" : "speech-end");
        break;
      case "clear":
        this.speaker?.clear();
        break;
      case "error":
        this.emit("error", message.error as CallError);
        break;
      case "tool-calls":
        for (const item of (message.toolCallList as Array<Record<string, any>>) ?? []) this.runTool(item);
        break;
    }
  }

  private runTool(item: Record<string, any>): void {
    const name: string = item.name ?? item.function?.name;
    const handler = this.tools.get(name);
    if (!handler || (item.route && item.route !== "client")) return;
    const toolCallId: string = item.id;
    const given = item.arguments ?? item.function?.arguments ?? {};
    // Sent now, or once a lost connection is back; an error event if the call is over.
    const answer = (fields: ToolCallResult) => this.send({ type: "tool-call-result", toolCallId, name, ...fields });
    const call: ToolCall = {
      toolCallId,
      name,
      progress: (result, message) => answer({ result, willContinue: true, ...(message ? { message } : {}) }),
    };
    Promise.resolve()
      .then(() => handler(typeof given === "string" ? (given ? JSON.parse(given) : {}) : given, call))
      .then(
        (value) => answer(value instanceof Result ? value.fields : { result: value === undefined ? null : value }),
        (error) => answer({ error: error instanceof Error ? error.message : String(error) }),
      );
  }

  private fail(code: string, detail: unknown): void {
    const message = detail instanceof Error ? detail.message : String(detail);
    this.emit("error", { code, message });
  }

  /** The socket closed under a live call: over if the call ended (1000, or a 4xxx
   * refusal) or the app ended it; otherwise connect again while the server waits. */
  private dropped(url: string, code: number): void {
    if (this.ending || code === 1000 || (code >= 4000 && code < 5000)) {
      this.closed();
      return;
    }
    this.reconnecting = true;
    const until = Date.now() + RECONNECT_MS;
    const attempt = () => {
      if (this.ending) return this.closed();
      const socket = new this.WebSocketImpl(url);
      socket.binaryType = "arraybuffer";
      this.socket = socket;
      let back = false;
      socket.onopen = () => {
        back = true;
        this.reconnecting = false;
        for (const message of this.waiting.splice(0)) socket.send(JSON.stringify(message));
      };
      socket.onmessage = (event: MessageEvent) => this.received(event.data);
      socket.onclose = (event: CloseEvent) => {
        if (back) return this.dropped(url, event?.code ?? 1006);
        if (Date.now() < until && !(event?.code >= 4000 && event?.code < 5000)) setTimeout(attempt, 1000);
        else {
          this.reconnecting = false;
          this.waiting = [];
          this.fail("connection_lost", "the call's connection was lost and could not be restored");
          this.closed();
        }
      };
    };
    setTimeout(attempt, 250);
  }

  private closed(): void {
    const wasLive = this.live;
    this.socket = null;
    this.live = false;
    this.release();
    if (wasLive) this.emit("call-end");
  }

  private release(): void {
    this.microphone?.close();
    this.microphone = null;
    this.speaker?.clear();
    this.speaker = null;
    void this.context?.close().catch(() => undefined);
    this.context = null;
  }
}

export { Backchannel };

function isHandle(value: unknown): value is CallHandle {
  return typeof value === "object" && value !== null && "clientUrl" in value && "clientToken" in value;
}

export type { Listener as EventListener };
export type CallEventName = keyof CallEvents;
export type Handler<E extends CallEventName> = Listener<CallEvents[E]>;
