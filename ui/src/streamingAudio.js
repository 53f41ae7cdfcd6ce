// Playing speech while it streams in. MP3 and AAC go through Media Source Extensions into the
// <audio> element; WAV and raw PCM are 16-bit samples, scheduled on the Web Audio clock as they
// arrive; Ogg Opus and FLAC (which Chromium's MSE does not take as bare streams) play once the
// whole clip is there. Every path keeps the bytes for the download button.

const MSE_TYPES = { mp3: 'audio/mpeg', aac: 'audio/aac' };
const PCM_RATE = 24000; // OpenAI's `pcm`: signed 16-bit little-endian mono at 24 kHz

/** How `format` can play while it streams: 'mse', 'pcm' or 'whole'. */
export function streamingMode(format) {
  const type = MSE_TYPES[format];
  if (type && typeof MediaSource !== 'undefined' && MediaSource.isTypeSupported(type)) return 'mse';
  if ((format === 'wav' || format === 'pcm') && typeof AudioContext !== 'undefined') return 'pcm';
  return 'whole';
}

// The body's chunks. Aborting `signal` cancels the body too: the fetch's own abort does not
// always reach a body that is already being read (seen in Chromium), and the server only stops
// synthesising once the connection closes.
async function* chunksOf(response, signal) {
  const reader = response.body.getReader();
  const cancel = () => reader.cancel().catch(() => {});
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (signal?.aborted) throw new DOMException('Stopped', 'AbortError');
      if (done) return;
      if (value.byteLength) yield value;
    }
  } finally {
    signal?.removeEventListener('abort', cancel);
    reader.releaseLock();
  }
}

function appended(buffer, bytes) {
  return new Promise((resolve, reject) => {
    buffer.addEventListener('updateend', resolve, { once: true });
    buffer.addEventListener('error', () => reject(new Error('the browser could not decode the audio')),
      { once: true });
    buffer.appendBuffer(bytes);
  });
}

async function playThroughMediaSource(response, type, audio, kept, timeline, signal) {
  const source = new MediaSource();
  audio.src = URL.createObjectURL(source);
  await new Promise((resolve) => source.addEventListener('sourceopen', resolve, { once: true }));
  const buffer = source.addSourceBuffer(type);
  for await (const chunk of chunksOf(response, signal)) {
    kept.push(chunk);
    await appended(buffer, chunk);
    if (timeline.firstAudio === undefined) {
      timeline.firstAudio = performance.now();
      audio.play().catch(() => {});
    }
  }
  if (source.readyState === 'open') source.endOfStream();
}

/** 16-bit PCM from a WAV stream: the sample rate from its header, then the samples. */
class PcmReader {
  constructor(format) {
    this.wav = format === 'wav';
    this.rate = PCM_RATE;
    this.header = this.wav ? new Uint8Array(0) : null;
    this.odd = null; // a byte left over from the previous chunk
  }

  /** The samples in `bytes` (as floats), once the header has been read. */
  push(bytes) {
    if (this.header !== null) {
      const joined = new Uint8Array(this.header.length + bytes.length);
      joined.set(this.header);
      joined.set(bytes, this.header.length);
      const start = this.dataStart(joined);
      if (start < 0) {
        this.header = joined;
        return new Float32Array(0);
      }
      this.header = null;
      bytes = joined.subarray(start);
    }
    if (this.odd !== null) {
      const joined = new Uint8Array(bytes.length + 1);
      joined[0] = this.odd;
      joined.set(bytes, 1);
      bytes = joined;
      this.odd = null;
    }
    if (bytes.length % 2) {
      this.odd = bytes[bytes.length - 1];
      bytes = bytes.subarray(0, bytes.length - 1);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const samples = new Float32Array(bytes.length / 2);
    for (let i = 0; i < samples.length; i += 1) samples[i] = view.getInt16(2 * i, true) / 32768;
    return samples;
  }

  /** Where the samples start in a WAV prefix (reading the rate from `fmt `), or -1. */
  dataStart(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let at = 12; // after "RIFF", the size and "WAVE"
    while (at + 8 <= bytes.length) {
      const id = String.fromCharCode(...bytes.subarray(at, at + 4));
      const size = view.getUint32(at + 4, true);
      if (id === 'data') return at + 8;
      if (id === 'fmt ' && at + 16 <= bytes.length) this.rate = view.getUint32(at + 12, true);
      at += 8 + size + (size % 2);
    }
    return -1;
  }
}

async function playThroughWebAudio(response, format, kept, timeline, signal) {
  const context = new AudioContext();
  signal?.addEventListener('abort', () => context.close().catch(() => {}), { once: true });
  const reader = new PcmReader(format);
  let next = 0;
  try {
    for await (const chunk of chunksOf(response, signal)) {
      kept.push(chunk);
      const samples = reader.push(chunk);
      if (!samples.length) continue;
      const clip = context.createBuffer(1, samples.length, reader.rate);
      clip.copyToChannel(samples, 0);
      const node = context.createBufferSource();
      node.buffer = clip;
      node.connect(context.destination);
      next = Math.max(next, context.currentTime + 0.05);
      node.start(next);
      next += clip.duration;
      timeline.scheduledSeconds = (timeline.scheduledSeconds || 0) + clip.duration;
      if (timeline.firstAudio === undefined) timeline.firstAudio = performance.now();
    }
  } catch (error) {
    context.close().catch(() => {});
    throw error;
  }
  // Let it play out, then free the audio device.
  const left = Math.max(0, next - context.currentTime);
  setTimeout(() => context.close().catch(() => {}), (left + 0.5) * 1000);
}

/**
 * Read `response` (a speech stream in `format`) and play it as it arrives where the browser can.
 * Returns the whole clip as a Blob of `type` and a timeline of performance.now() marks:
 * `firstAudio` (the first sound handed to the browser) and `end` (the last byte read).
 */
export async function playSpeechStream(response, format, type, audio, signal) {
  const kept = [];
  const timeline = { mode: streamingMode(format), start: performance.now() };
  if (timeline.mode === 'mse') {
    await playThroughMediaSource(response, MSE_TYPES[format], audio, kept, timeline, signal);
  } else if (timeline.mode === 'pcm') {
    await playThroughWebAudio(response, format, kept, timeline, signal);
  } else {
    for await (const chunk of chunksOf(response, signal)) kept.push(chunk);
  }
  timeline.end = performance.now();
  return { blob: new Blob(kept, { type }), timeline };
}
