// A WAV file around OpenAI's raw `pcm` speech (16-bit little-endian mono, 24 kHz), so the
// <audio> element can replay a clip that was streamed as PCM.

export function wavOf(pcm, rate = 24000) {
  const header = new DataView(new ArrayBuffer(44));
  const text = (at, s) => [...s].forEach((c, i) => header.setUint8(at + i, c.charCodeAt(0)));
  text(0, 'RIFF');
  header.setUint32(4, 36 + pcm.size, true);
  text(8, 'WAVE');
  text(12, 'fmt ');
  header.setUint32(16, 16, true); // fmt chunk size
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, rate, true);
  header.setUint32(28, rate * 2, true); // bytes per second
  header.setUint16(32, 2, true); // block align
  header.setUint16(34, 16, true); // bits per sample
  text(36, 'data');
  header.setUint32(40, pcm.size, true);
  return new Blob([header.buffer, pcm], { type: 'audio/wav' });
}
