import { useEffect, useRef, useState } from 'preact/hooks';
import { call, messageOf } from '../api.js';
import { download } from '../download.js';
import { playSpeechStream } from '../streamingAudio.js';
import { wavOf } from '../wav.js';
import { useModels } from './useModels.js';
import { ErrorLine } from './ErrorLine.jsx';

// OpenAI's names, which every speech model here answers to; used when /v1/audio/voices fails.
const OPENAI_VOICES = ['alloy', 'ash', 'ballad', 'coral', 'echo', 'fable', 'onyx', 'nova', 'sage',
  'shimmer', 'verse'].map((id) => ({ id, label: id }));

/** The served voices (GET /v1/audio/voices), each labelled with its language and rate. */
function useVoices(model) {
  const [voices, setVoices] = useState(OPENAI_VOICES);
  useEffect(() => {
    if (!model) return undefined;
    let stopped = false;
    call(`/v1/audio/voices?model=${encodeURIComponent(model)}`)
      .then((r) => r.json())
      .then((list) => {
        if (stopped || !list.data?.length) return;
        setVoices(list.data.map((v) => ({
          id: v.id,
          label: [v.name, v.language, `${v.sample_rate} Hz`].filter(Boolean).join(' · ') +
            (v.openai_voices?.length ? ` (${v.openai_voices.join(', ')})` : ''),
        })));
      })
      .catch(() => {}); // older server or no key yet: OpenAI's names still work
    return () => { stopped = true; };
  }, [model]);
  return voices;
}
const FORMATS = { mp3: 'audio/mpeg', opus: 'audio/ogg', aac: 'audio/aac', flac: 'audio/flac',
  wav: 'audio/wav', pcm: 'audio/pcm' };

export function Speech() {
  const [models, modelError] = useModels('speech');
  const [text, setText] = useState('Hello! This is the AI Labs playground speaking.');
  const voices = useVoices(models[0]?.id);
  const [chosenVoice, setVoice] = useState('');
  const voice = voices.some((v) => v.id === chosenVoice) ? chosenVoice : voices[0].id;
  const [format, setFormat] = useState('mp3');
  const [speed, setSpeed] = useState(1);
  const [clip, setClip] = useState(null); // {blob, format, mode}
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const player = useRef(null);
  const running = useRef(null);
  const urls = useRef([]);

  const forgetUrls = () => {
    urls.current.forEach((u) => URL.revokeObjectURL(u));
    urls.current = [];
  };
  useEffect(() => () => {
    running.current?.abort();
    forgetUrls();
  }, []);

  const speak = async (event) => {
    event.preventDefault();
    const controller = new AbortController();
    running.current = controller;
    setBusy(true);
    setError('');
    setClip(null);
    forgetUrls();
    const audio = player.current;
    audio.pause();
    audio.removeAttribute('src');
    try {
      const response = await call('/v1/audio/speech', {
        json: { model: models[0]?.id || 'tts-1', input: text, voice, response_format: format,
          speed: Number(speed) },
        signal: controller.signal,
      });
      // Plays as it arrives where the browser can (see streamingAudio.js).
      const { blob, timeline } = await playSpeechStream(response, format, FORMATS[format], audio,
        controller.signal);
      window.__labsSpeechTimeline = timeline; // read by the browser tests
      if (audio.src.startsWith('blob:')) urls.current.push(audio.src);
      if (timeline.mode !== 'mse') {
        // The element replays the finished clip (raw PCM gets a WAV header for it).
        const url = URL.createObjectURL(format === 'pcm' ? wavOf(blob) : blob);
        urls.current.push(url);
        audio.src = url;
        if (timeline.mode === 'whole') audio.play().catch(() => {});
      }
      setClip({ blob, format, mode: timeline.mode });
    } catch (e) {
      setError(messageOf(e));
    } finally {
      running.current = null;
      setBusy(false);
    }
  };

  return (
    <div class="panel">
      <form onSubmit={speak} class="stack">
        <label for="tts-text">Text</label>
        <textarea id="tts-text" rows={4} maxLength={4096} value={text}
          onInput={(e) => setText(e.currentTarget.value)} />
        <div class="row">
          <label for="tts-voice">Voice</label>
          <select id="tts-voice" value={voice} onChange={(e) => setVoice(e.currentTarget.value)}>
            {voices.map((v) => <option key={v.id} value={v.id}>{v.label}</option>)}
          </select>
          <label for="tts-format">Format</label>
          <select id="tts-format" value={format} onChange={(e) => setFormat(e.currentTarget.value)}>
            {Object.keys(FORMATS).map((f) => <option key={f} value={f}>{f}</option>)}
          </select>
          <label for="tts-speed">Speed</label>
          <input id="tts-speed" type="number" min="0.25" max="4" step="0.25" value={speed}
            onInput={(e) => setSpeed(e.currentTarget.value)} />
          {/* keyed: a reused <button> would still be type=submit when Stop is clicked */}
          {busy
            ? <button key="stop" type="button" class="stop"
              onClick={() => running.current?.abort()}>Stop</button>
            : <button key="speak" type="submit" disabled={!text.trim()}>Speak</button>}
        </div>
      </form>
      <ErrorLine message={modelError || error} />
      <div class="row" hidden={!busy && !clip}>
        <audio ref={player} controls aria-label="Synthesised speech" />
        {clip && (
          <button type="button" onClick={() => download(clip.blob, `speech.${clip.format}`)}>
            Download</button>
        )}
      </div>
      {busy && <p class="note">Speaking… the audio plays as it arrives.</p>}
    </div>
  );
}
