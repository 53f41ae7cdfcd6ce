import { useEffect, useState } from 'preact/hooks';
import { parseMetrics, total } from '../prometheus.js';
import { call, messageOf } from '../api.js';
import { modelStatus, readiness } from '../models.js';
import { ErrorLine } from './ErrorLine.jsx';

const REFRESH_MS = 3000;

async function readMetrics() {
  const response = await fetch('/metrics');
  if (!response.ok) return null; // LABS_METRICS=false
  return parseMetrics(await response.text());
}

/** Completion tokens per second between the last two refreshes, or '–' before there are two. */
function tokenRate(previous, current) {
  if (!previous || !current || current.at <= previous.at) return '–';
  const made = current.tokens - previous.tokens;
  return `${Math.max(0, made / ((current.at - previous.at) / 1000)).toFixed(1)}`;
}

function Figures({ samples, rate }) {
  if (!samples) return <p class="note">/metrics is turned off on this server.</p>;
  const figures = [
    ['Completion tokens/s', rate],
    ['Chat slots decoding', total(samples, 'labs_chat_slots_active')],
    ['Chat requests waiting', total(samples, 'labs_chat_requests_waiting')],
    ['Prompt tokens', total(samples, 'labs_chat_prompt_tokens_total')],
    ['Completion tokens', total(samples, 'labs_chat_completion_tokens_total')],
    ['Engine restarts', total(samples, 'labs_engine_restarts_total')],
    ['HTTP requests in flight', total(samples, 'labs_http_requests_in_flight')],
  ];
  return (
    <dl class="figures">
      {figures.map(([name, value]) => (
        <div key={name}><dt>{name}</dt><dd>{value}</dd></div>
      ))}
    </dl>
  );
}

function megabytes(bytes) {
  return bytes == null ? '–' : `${(bytes / 2 ** 20).toFixed(0)} MB`;
}

function clockTime(unix) {
  return unix == null ? '–' : new Date(unix * 1000).toLocaleTimeString();
}

/** The models from /v1/status, with load and unload buttons. */
function ModelTable({ status, onAction }) {
  return (
    <>
      <h2>Models <span class="note">{status.loaded_models} loaded,
        {` ${megabytes(status.memory_bytes)}`}</span></h2>
      <table class="models">
        <thead>
          <tr><th scope="col">Model</th><th scope="col">Kind</th><th scope="col">State</th>
            <th scope="col">Memory</th><th scope="col">Worker pid</th>
            <th scope="col">Running / waiting</th><th scope="col">Loaded since</th>
            <th scope="col">Unloads at</th><th scope="col">Restarts</th>
            <th scope="col"><span class="visually-hidden">Actions</span></th></tr>
        </thead>
        <tbody>
          {status.data.map((m) => (
            <tr key={m.id} data-model={m.id}>
              <td>{m.id}{m.aliases?.length ? <span class="note"> ({m.aliases.join(', ')})</span> : null}</td>
              <td>{m.kind}</td>
              <td class="state"><span class={`badge ${m.state}`}>{m.state}</span>
                {m.error && <span class="note"> {m.error}</span>}</td>
              <td class="memory">{megabytes(m.memory_bytes)}</td>
              <td>{m.pid ?? '–'}</td>
              <td>{m.requests_running} / {m.requests_waiting}</td>
              <td>{clockTime(m.loaded_since)}</td><td>{clockTime(m.expires_at)}</td>
              <td>{m.restarts}</td>
              <td>{m.state === 'loaded'
                ? <button type="button" onClick={() => onAction(m.id, 'unload')}>Unload</button>
                : <button type="button" disabled={m.state === 'loading'}
                  onClick={() => onAction(m.id, 'load')}>Load</button>}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

export function Server({ active }) {
  const [ready, setReady] = useState(null);
  const [status, setStatus] = useState(null); // /v1/status, when the key allows it
  const [samples, setSamples] = useState(undefined);
  const [error, setError] = useState('');
  const [counts, setCounts] = useState([null, null]); // the last two {at, tokens} readings
  const [statusError, setStatusError] = useState('');
  const [tick, setTick] = useState(0); // bumped to refresh at once after a load or unload

  const act = async (id, action) => {
    try {
      await call(`/v1/models/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
    } catch (e) {
      setError(messageOf(e));
    }
    setTick((t) => t + 1);
  };

  useEffect(() => {
    if (!active) return undefined;
    let stopped = false;
    const refresh = async () => {
      try {
        const [r, m, st] = await Promise.all([readiness(), readMetrics(),
          modelStatus().catch((e) => ({ failure: messageOf(e) }))]);
        if (stopped) return;
        setReady(r);
        setStatus(st.failure ? null : st);
        setStatusError(st.failure || '');
        setSamples(m);
        if (m) {
          const reading = { at: performance.now(),
            tokens: total(m, 'labs_chat_completion_tokens_total') };
          setCounts(([, last]) => [last, reading]);
        }
        setError('');
      } catch (e) {
        if (!stopped) setError(`Could not reach the server: ${e.message}`);
      }
    };
    refresh();
    const timer = setInterval(refresh, REFRESH_MS);
    return () => { stopped = true; clearInterval(timer); };
  }, [active, tick]);

  return (
    <div class="panel">
      <ErrorLine message={error} />
      {status && <ModelTable status={status} onAction={act} />}
      {!status && ready && (
        <>
          {statusError && <p class="note">Model details: {statusError}</p>}
          <h2>Models <span class={`badge ${ready.status}`}>{ready.status}</span></h2>
          <table class="models">
            <thead>
              <tr><th scope="col">Model</th><th scope="col">Kind</th><th scope="col">State</th>
                <th scope="col">Worker pid</th><th scope="col">Restarts</th>
                <th scope="col">Load time</th></tr>
            </thead>
            <tbody>
              {ready.models.map((m) => (
                <tr key={m.id} data-model={m.id}>
                  <td>{m.id}</td><td>{m.kind}</td>
                  <td class="state"><span class={`badge ${m.state}`}>{m.state}</span>
                    {m.error && <span class="note"> {m.error}</span>}</td>
                  <td>{m.pid ?? '–'}</td><td>{m.restarts}</td>
                  <td>{m.load_seconds != null ? `${m.load_seconds.toFixed(1)} s` : '–'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      {samples !== undefined && (<><h2>Activity</h2><Figures samples={samples} rate={tokenRate(...counts)} /></>)}
    </div>
  );
}
