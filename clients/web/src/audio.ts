/**
 * The call's audio in the browser: the microphone through an AudioWorklet (echo
 * cancellation on), 20 ms frames of PCM16 at the context's rate; and the assistant's
 * PCM16 frames played back to back, dropped at once on `clear` (a barge-in).
 */

const FRAME_SECONDS = 0.02;

// The worklet's code, loaded from a Blob so the SDK stays one module.
const CAPTURE = `
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

export function toPcm16(samples: Float32Array): Int16Array {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-1, Math.min(1, samples[i])) * 0x7fff;
  return pcm;
}

/** RMS of PCM16 samples as 0..1, scaled so normal speech reads about 0.3 to 0.8. */
export function level(pcm: Int16Array): number {
  if (pcm.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < pcm.length; i++) sum += (pcm[i] / 32768) ** 2;
  return Math.min(1, Math.sqrt(sum / pcm.length) * 4);
}

export class Microphone {
  private constructor(
    private readonly stream: MediaStream,
    private readonly node: AudioWorkletNode,
    private readonly source: MediaStreamAudioSourceNode,
  ) {}

  static async open(context: AudioContext, onFrame: (pcm: Int16Array) => void): Promise<Microphone> {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    try {
      return await Microphone.wire(context, stream, onFrame);
    } catch (error) {
      for (const track of stream.getTracks()) track.stop(); // never leave it recording
      throw error;
    }
  }

  private static async wire(
    context: AudioContext,
    stream: MediaStream,
    onFrame: (pcm: Int16Array) => void,
  ): Promise<Microphone> {
    const url = URL.createObjectURL(new Blob([CAPTURE], { type: "application/javascript" }));
    try {
      await context.audioWorklet.addModule(url);
    } finally {
      URL.revokeObjectURL(url);
    }
    const frameSize = Math.round(context.sampleRate * FRAME_SECONDS);
    const node = new AudioWorkletNode(context, "backchannel-capture", { processorOptions: { frameSize } });
    node.port.onmessage = (event: MessageEvent<Float32Array>) => onFrame(toPcm16(event.data));
    const source = context.createMediaStreamSource(stream);
    source.connect(node);
    // A silent path to the output keeps the graph pulling the worklet.
    const sink = context.createGain();
    sink.gain.value = 0;
    node.connect(sink).connect(context.destination);
    if (context.state === "suspended") await context.resume();
    return new Microphone(stream, node, source);
  }

  close(): void {
    this.source.disconnect();
    this.node.port.onmessage = null;
    this.node.disconnect();
    for (const track of this.stream.getTracks()) track.stop();
  }
}

export class Speaker {
  private playAt = 0;
  private sources: AudioBufferSourceNode[] = [];
  private lastLevel = 0;

  constructor(
    private readonly context: AudioContext,
    private readonly onLevel: (level: number) => void,
  ) {}

  /** Queue one frame of PCM16 at the context's rate, right after the previous one. */
  play(data: ArrayBuffer): void {
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
      if (this.sources.length === 0) this.onLevel(0); // played out: silent again
    };
    const now = this.context.currentTime;
    if (now - this.lastLevel >= 0.1) {
      this.lastLevel = now;
      this.onLevel(level(pcm));
    }
  }

  /** Drop everything queued: the caller took the floor. */
  clear(): void {
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
        // already stopped
      }
    }
    this.sources = [];
    this.playAt = 0;
    this.onLevel(0);
  }
}
