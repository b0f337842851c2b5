// src/emitter.ts
var Emitter = class {
  constructor() {
    this.listeners = {};
  }
  on(event, listener) {
    var _a;
    ((_a = this.listeners)[event] ?? (_a[event] = [])).push(listener);
    return this;
  }
  once(event, listener) {
    const wrapped = (...args) => {
      this.off(event, wrapped);
      listener(...args);
    };
    return this.on(event, wrapped);
  }
  off(event, listener) {
    this.listeners[event] = (this.listeners[event] ?? []).filter((l) => l !== listener);
    return this;
  }
  removeListener(event, listener) {
    return this.off(event, listener);
  }
  removeAllListeners(event) {
    if (event === void 0) this.listeners = {};
    else delete this.listeners[event];
    return this;
  }
  /** Call each listener; one that throws does not stop the others or the call. */
  emit(event, ...args) {
    for (const listener of [...this.listeners[event] ?? []]) {
      try {
        listener(...args);
      } catch (error) {
        console.error(`backchannel: a ${String(event)} listener failed`, error);
      }
    }
  }
};

// src/audio.ts
var FRAME_SECONDS = 0.02;
var CAPTURE = `
class BackchannelCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frame = new Float32Array(options.processorOptions.frameSize);
    this.filled = 0;
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      let i = 0;
      while (i < channel.length) {
        const n = Math.min(channel.length - i, this.frame.length - this.filled);
        this.frame.set(channel.subarray(i, i + n), this.filled);
        this.filled += n;
        i += n;
        if (this.filled === this.frame.length) {
          this.port.postMessage(this.frame.slice());
          this.filled = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("backchannel-capture", BackchannelCapture);
`;
function toPcm16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-1, Math.min(1, samples[i])) * 32767;
  return pcm;
}
function level(pcm) {
  if (pcm.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < pcm.length; i++) sum += (pcm[i] / 32768) ** 2;
  return Math.min(1, Math.sqrt(sum / pcm.length) * 4);
}
var Microphone = class _Microphone {
  constructor(stream, node, source) {
    this.stream = stream;
    this.node = node;
    this.source = source;
  }
  static async open(context, onFrame) {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true }
    });
    try {
      return await _Microphone.wire(context, stream, onFrame);
    } catch (error) {
      for (const track of stream.getTracks()) track.stop();
      throw error;
    }
  }
  static async wire(context, stream, onFrame) {
    const url = URL.createObjectURL(new Blob([CAPTURE], { type: "application/javascript" }));
    try {
      await context.audioWorklet.addModule(url);
    } finally {
      URL.revokeObjectURL(url);
    }
    const frameSize = Math.round(context.sampleRate * FRAME_SECONDS);
    const node = new AudioWorkletNode(context, "backchannel-capture", { processorOptions: { frameSize } });
    node.port.onmessage = (event) => onFrame(toPcm16(event.data));
    const source = context.createMediaStreamSource(stream);
    source.connect(node);
    const sink = context.createGain();
    sink.gain.value = 0;
    node.connect(sink).connect(context.destination);
    if (context.state === "suspended") await context.resume();
    return new _Microphone(stream, node, source);
  }
  close() {
    this.source.disconnect();
    this.node.port.onmessage = null;
    this.node.disconnect();
    for (const track of this.stream.getTracks()) track.stop();
  }
};
var Speaker = class {
  constructor(context, onLevel) {
    this.context = context;
    this.onLevel = onLevel;
    this.playAt = 0;
    this.sources = [];
    this.lastLevel = 0;
  }
  /** Queue one frame of PCM16 at the context's rate, right after the previous one. */
  play(data) {
    const pcm = new Int16Array(data);
    if (pcm.length === 0) return;
    const buffer = this.context.createBuffer(1, pcm.length, this.context.sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    this.playAt = Math.max(this.playAt, this.context.currentTime + 0.05);
    source.start(this.playAt);
    this.playAt += buffer.duration;
    this.sources.push(source);
    source.onended = () => {
      this.sources = this.sources.filter((s) => s !== source);
      if (this.sources.length === 0) this.onLevel(0);
    };
    const now = this.context.currentTime;
    if (now - this.lastLevel >= 0.1) {
      this.lastLevel = now;
      this.onLevel(level(pcm));
    }
  }
  /** Drop everything queued: the caller took the floor. */
  clear() {
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
      }
    }
    this.sources = [];
    this.playAt = 0;
    this.onLevel(0);
  }
};

// src/index.ts
var SAMPLE_RATE = 16e3;
var SETTLE_MS = 500;
var RECONNECT_MS = 8e3;
var Result = class _Result {
  constructor(fields) {
    this.fields = fields;
  }
  static of(result, fields = {}) {
    return new _Result({ ...fields, result });
  }
};
var Backchannel = class extends Emitter {
  /**
   * @param apiToken The server's API key, to create calls from the browser (development;
   *   in production your backend creates the call and hands the page a {@link CallHandle}).
   * @param apiBaseUrl The server's URL (default: this page's origin).
   */
  constructor(apiToken, apiBaseUrl, options = {}) {
    super();
    this.apiToken = apiToken;
    this.tools = /* @__PURE__ */ new Map();
    this.socket = null;
    this.microphone = null;
    this.speaker = null;
    this.context = null;
    this.muted = false;
    this.live = false;
    this.ending = false;
    this.reconnecting = false;
    this.waiting = [];
    this.baseUrl = (apiBaseUrl ?? globalThis.location?.origin ?? "").replace(/\/$/, "");
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  }
  /** Answer calls of the client tool `name` with `handler`. */
  clientTool(name, handler) {
    this.tools.set(name, handler);
    return this;
  }
  /**
   * Start a call: from a stored assistant's id, an inline assistant (Vapi's JSON), or a
   * call your backend created. Resolves with the call once it is live; like Vapi's SDK,
   * with `null` (and an `error` event) if it could not start.
   */
  async start(assistant, assistantOverrides, options = {}) {
    if (this.socket) {
      this.fail("call_already_running", "a call is already running; stop() it first");
      return null;
    }
    this.ending = false;
    try {
      const type = options.type ?? (isHandle(assistant) ? assistant.type : void 0) ?? "web";
      const handle = isHandle(assistant) ? assistant : await this.createCall(assistant, assistantOverrides, type);
      let url = `${handle.clientUrl}?token=${encodeURIComponent(handle.clientToken)}`;
      if (type === "web") {
        this.context = new AudioContext({ sampleRate: SAMPLE_RATE });
        this.speaker = new Speaker(this.context, (level2) => this.emit("volume-level", level2));
        this.microphone = await Microphone.open(this.context, (pcm) => this.sendAudio(pcm));
        url += `&sampleRate=${Math.round(this.context.sampleRate)}`;
      }
      await this.connect(url);
      return handle;
    } catch (error) {
      this.socket?.close();
      this.socket = null;
      this.release();
      const failure = error;
      if (failure?.code) this.emit("error", failure);
      else this.fail("call_start_failed", error);
      return null;
    }
  }
  connect(url) {
    const socket = new this.WebSocketImpl(url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    return new Promise((resolve, reject) => {
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
      socket.onclose = (event) => {
        if (!settled) {
          settled = true;
          reject({ code: event?.reason || `closed_${event?.code ?? "early"}`, message: `the server closed the call's socket (${event?.code})` });
          return;
        }
        this.dropped(url, event?.code ?? 1006);
      };
      socket.onmessage = (event) => {
        live();
        this.received(event.data);
      };
    });
  }
  /** End the call and let go of the microphone. */
  stop() {
    this.end();
  }
  /** End the call (Vapi's `end`): the assistant stops, the server reports the call. */
  end() {
    this.ending = true;
    if (this.socket && this.socket.readyState === 1) this.send({ type: "end-call" });
    this.socket?.close(1e3);
    this.release();
  }
  /** Send a control message, a typed turn, or a tool result. */
  send(message) {
    if (this.reconnecting) {
      this.waiting.push(message);
      return;
    }
    if (!this.socket || this.socket.readyState !== 1) {
      this.fail("not_connected", `cannot send ${message.type}: no call is running`);
      return;
    }
    this.socket.send(JSON.stringify(message));
  }
  /** Have the assistant say `message` (Vapi's `say`). */
  say(message, endCallAfterSpoken = false, interruptionsEnabled = false, interruptAssistantEnabled = false) {
    this.send({ type: "say", content: message, endCallAfterSpoken, interruptionsEnabled, interruptAssistantEnabled });
  }
  /** Mute the user's microphone: nothing is sent while muted. */
  setMuted(muted) {
    this.muted = muted;
  }
  isMuted() {
    return this.muted;
  }
  // -- inside ------------------------------------------------------------------------
  async createCall(assistant, assistantOverrides, type) {
    if (!this.apiToken) {
      throw { code: "api_key_needed", message: "creating a call needs the API key; or pass a call your backend created" };
    }
    const body = typeof assistant === "string" ? { assistantId: assistant } : { assistant };
    if (assistantOverrides) body.assistantOverrides = assistantOverrides;
    body.type = type;
    const response = await this.fetchImpl(`${this.baseUrl}/calls`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${this.apiToken}` },
      body: JSON.stringify(body)
    });
    const data = await response.json();
    if (!response.ok) throw data?.error ?? { code: "http_error", message: response.statusText };
    return { id: data.id, clientUrl: data.clientUrl, clientToken: data.clientToken, type: data.type };
  }
  sendAudio(pcm) {
    if (!this.muted && this.socket && this.socket.readyState === 1) this.socket.send(pcm.buffer);
  }
  received(data) {
    if (typeof data !== "string") {
      this.speaker?.play(data);
      return;
    }
    let message;
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
        this.emit("error", message.error);
        break;
      case "tool-calls":
        for (const item of message.toolCallList ?? []) this.runTool(item);
        break;
    }
  }
  runTool(item) {
    const name = item.name ?? item.function?.name;
    const handler = this.tools.get(name);
    if (!handler || item.route && item.route !== "client") return;
    const toolCallId = item.id;
    const given = item.arguments ?? item.function?.arguments ?? {};
    const answer = (fields) => this.send({ type: "tool-call-result", toolCallId, name, ...fields });
    const call = {
      toolCallId,
      name,
      progress: (result, message) => answer({ result, willContinue: true, ...message ? { message } : {} })
    };
    Promise.resolve().then(() => handler(typeof given === "string" ? given ? JSON.parse(given) : {} : given, call)).then(
      (value) => answer(value instanceof Result ? value.fields : { result: value === void 0 ? null : value }),
      (error) => answer({ error: error instanceof Error ? error.message : String(error) })
    );
  }
  fail(code, detail) {
    const message = detail instanceof Error ? detail.message : String(detail);
    this.emit("error", { code, message });
  }
  /** The socket closed under a live call: over if the call ended (1000, or a 4xxx
   * refusal) or the app ended it; otherwise connect again while the server waits. */
  dropped(url, code) {
    if (this.ending || code === 1e3 || code >= 4e3 && code < 5e3) {
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
      socket.onmessage = (event) => this.received(event.data);
      socket.onclose = (event) => {
        if (back) return this.dropped(url, event?.code ?? 1006);
        if (Date.now() < until && !(event?.code >= 4e3 && event?.code < 5e3)) setTimeout(attempt, 1e3);
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
  closed() {
    const wasLive = this.live;
    this.socket = null;
    this.live = false;
    this.release();
    if (wasLive) this.emit("call-end");
  }
  release() {
    this.microphone?.close();
    this.microphone = null;
    this.speaker?.clear();
    this.speaker = null;
    void this.context?.close().catch(() => void 0);
    this.context = null;
  }
};
function isHandle(value) {
  return typeof value === "object" && value !== null && "clientUrl" in value && "clientToken" in value;
}
export {
  Backchannel,
  RECONNECT_MS,
  Result,
  SAMPLE_RATE,
  Backchannel as default
};
