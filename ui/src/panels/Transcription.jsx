import { useRef, useState } from 'preact/hooks';
import { call, messageOf } from '../api.js';
import { download } from '../download.js';
import { clock, toSrt } from '../srt.js';
import { useModels } from './useModels.js';
import { ErrorLine } from './ErrorLine.jsx';

function useRecorder(onDone) {
  const recorder = useRef(null);
  const [recording, setRecording] = useState(false);
  const start = async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const chunks = [];
    const media = new MediaRecorder(stream);
    media.ondataavailable = (e) => chunks.push(e.data);
    media.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      const type = media.mimeType || 'audio/webm';
      onDone(new File(chunks, `recording.${type.includes('ogg') ? 'ogg' : 'webm'}`, { type }));
    };
    media.start();
    recorder.current = media;
    setRecording(true);
  };
  const stop = () => {
    recorder.current?.stop();
    recorder.current = null;
    setRecording(false);
  };
  return { recording, start, stop };
}

export function Transcription() {
  const [models, modelError] = useModels('transcription');
  const [result, setResult] = useState(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  const transcribe = async (file) => {
    setBusy(true);
    setError('');
    setResult(null);
    try {
      const form = new FormData();
      form.append('file', file);
      form.append('model', models[0]?.id || 'whisper-1');
      form.append('response_format', 'verbose_json');
      form.append('timestamp_granularities[]', 'segment');
      const body = await (await call('/v1/audio/transcriptions', { body: form })).json();
      setResult({ name: file.name, ...body });
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };
  const recorder = useRecorder(transcribe);
  const canRecord = typeof MediaRecorder !== 'undefined' && !!navigator.mediaDevices;

  return (
    <div class="panel">
      <div class="row">
        <label for="stt-file">Audio file</label>
        <input id="stt-file" type="file" accept="audio/*,video/*" disabled={busy}
          onChange={(e) => e.currentTarget.files[0] && transcribe(e.currentTarget.files[0])} />
        {canRecord && (recorder.recording
          ? <button type="button" class="stop" onClick={recorder.stop}>Stop recording</button>
          : <button type="button" disabled={busy}
            onClick={() => recorder.start().catch((e) => setError(`Microphone: ${e.message}`))}>
            Record</button>)}
      </div>
      {busy && <p class="note">Transcribing…</p>}
      <ErrorLine message={modelError || error} />
      {result && (
        <div class="stack">
          <p class="transcript">{result.text}</p>
          <table class="segments">
            <thead><tr><th scope="col">Start</th><th scope="col">End</th>
              <th scope="col">Text</th></tr></thead>
            <tbody>
              {(result.segments || []).map((s) => (
                <tr key={s.id}><td>{clock(s.start)}</td><td>{clock(s.end)}</td><td>{s.text}</td></tr>
              ))}
            </tbody>
          </table>
          <div>
            <button type="button" onClick={() => download(
              new Blob([toSrt(result.segments || [])], { type: 'application/x-subrip' }),
              `${result.name.replace(/\.[^.]*$/, '')}.srt`)}>Download SRT</button>
          </div>
        </div>
      )}
    </div>
  );
}
