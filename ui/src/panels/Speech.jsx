import { useEffect, useRef, useState } from 'preact/hooks';
import { call, messageOf } from '../api.js';
import { download } from '../download.js';
import { useModels } from './useModels.js';
import { ErrorLine } from './ErrorLine.jsx';

const VOICES = ['alloy', 'ash', 'ballad', 'coral', 'echo', 'fable', 'onyx', 'nova', 'sage',
  'shimmer', 'verse'];
const FORMATS = { mp3: 'audio/mpeg', opus: 'audio/ogg', aac: 'audio/aac', flac: 'audio/flac',
  wav: 'audio/wav', pcm: 'audio/pcm' };

export function Speech() {
  const [models, modelError] = useModels('speech');
  const [text, setText] = useState('Hello! This is the AI Labs playground speaking.');
  const [voice, setVoice] = useState('alloy');
  const [format, setFormat] = useState('mp3');
  const [speed, setSpeed] = useState(1);
  const [audio, setAudio] = useState(null); // {url, blob, format}
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const player = useRef(null);

  useEffect(() => () => audio && URL.revokeObjectURL(audio.url), [audio]);

  const speak = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError('');
    try {
      const response = await call('/v1/audio/speech', {
        json: { model: models[0]?.id || 'tts-1', input: text, voice, response_format: format,
          speed: Number(speed) },
      });
      // The whole stream is read, then played: every browser decodes a complete file.
      const blob = new Blob([await response.arrayBuffer()], { type: FORMATS[format] });
      setAudio({ url: URL.createObjectURL(blob), blob, format });
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };

  useEffect(() => {
    if (audio && audio.format !== 'pcm') player.current?.play().catch(() => {});
  }, [audio]);

  return (
    <div class="panel">
      <form onSubmit={speak} class="stack">
        <label for="tts-text">Text</label>
        <textarea id="tts-text" rows={4} maxLength={4096} value={text}
          onInput={(e) => setText(e.currentTarget.value)} />
        <div class="row">
          <label for="tts-voice">Voice</label>
          <select id="tts-voice" value={voice} onChange={(e) => setVoice(e.currentTarget.value)}>
            {VOICES.map((v) => <option key={v} value={v}>{v}</option>)}
          </select>
          <label for="tts-format">Format</label>
          <select id="tts-format" value={format} onChange={(e) => setFormat(e.currentTarget.value)}>
            {Object.keys(FORMATS).map((f) => <option key={f} value={f}>{f}</option>)}
          </select>
          <label for="tts-speed">Speed</label>
          <input id="tts-speed" type="number" min="0.25" max="4" step="0.25" value={speed}
            onInput={(e) => setSpeed(e.currentTarget.value)} />
          <button type="submit" disabled={busy || !text.trim()}>{busy ? 'Speaking…' : 'Speak'}</button>
        </div>
      </form>
      <ErrorLine message={modelError || error} />
      {audio && (
        <div class="row">
          {audio.format === 'pcm'
            ? <p class="note">Raw PCM (16-bit, 24 kHz) cannot be played here: download it.</p>
            : <audio ref={player} controls src={audio.url} aria-label="Synthesised speech" />}
          <button type="button" onClick={() => download(audio.blob, `speech.${audio.format}`)}>
            Download</button>
        </div>
      )}
    </div>
  );
}
