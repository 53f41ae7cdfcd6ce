import { useEffect, useState } from 'preact/hooks';
import { parseMetrics, total } from '../prometheus.js';
import { readiness } from '../models.js';
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

export function Server({ active }) {
  const [ready, setReady] = useState(null);
  const [samples, setSamples] = useState(undefined);
  const [error, setError] = useState('');
  const [counts, setCounts] = useState([null, null]); // the last two {at, tokens} readings

  useEffect(() => {
    if (!active) return undefined;
    let stopped = false;
    const refresh = async () => {
      try {
        const [r, m] = await Promise.all([readiness(), readMetrics()]);
        if (stopped) return;
        setReady(r);
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
  }, [active]);

  return (
    <div class="panel">
      <ErrorLine message={error} />
      {ready && (
        <>
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
