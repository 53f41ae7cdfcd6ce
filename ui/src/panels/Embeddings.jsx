import { useState } from 'preact/hooks';
import { interpolateRdBu } from 'd3-scale-chromatic';
import { call, messageOf } from '../api.js';
import { ErrorLine } from './ErrorLine.jsx';

const EXAMPLE = 'Hello world\nHi there\nGood morning\nThe invoice is overdue';

/** The cell colour for a cosine similarity in [-1, 1]: blue high, red low. */
function colourOf(value) {
  return interpolateRdBu((Math.max(-1, Math.min(1, value)) + 1) / 2);
}

/** Black or white text, whichever reads better on ``rgb``. */
function inkOn(rgb) {
  const [r, g, b] = rgb.match(/\d+/g).map(Number);
  return 0.299 * r + 0.587 * g + 0.114 * b > 140 ? '#000' : '#fff';
}

function Heatmap({ sentences, matrix }) {
  const [hovered, setHovered] = useState(null);
  return (
    <div>
      <table class="heatmap" aria-label="Cosine similarity matrix">
        <thead>
          <tr><td />{sentences.map((_, j) => <th key={j} scope="col">{j + 1}</th>)}</tr>
        </thead>
        <tbody>
          {matrix.map((row, i) => (
            <tr key={i}>
              <th scope="row" title={sentences[i]}>{i + 1}</th>
              {row.map((value, j) => {
                const background = colourOf(value);
                return (
                  <td key={j} class="cell" style={{ background, color: inkOn(background) }}
                    title={`${sentences[i]} × ${sentences[j]}: ${value.toFixed(3)}`}
                    onMouseEnter={() => setHovered({ i, j, value })}
                    onMouseLeave={() => setHovered(null)}>{value.toFixed(2)}</td>
                );
              })}
            </tr>
          ))}
        </tbody>
      </table>
      <p class="readout" aria-live="polite">
        {hovered
          ? `“${sentences[hovered.i]}” × “${sentences[hovered.j]}”: ${hovered.value.toFixed(4)}`
          : 'Hover a cell to read its similarity.'}
      </p>
      <ol class="legend">{sentences.map((s, i) => <li key={i}>{s}</li>)}</ol>
    </div>
  );
}

export function Embeddings() {
  const [text, setText] = useState(EXAMPLE);
  const [result, setResult] = useState(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  const compare = async (event) => {
    event.preventDefault();
    const sentences = text.split('\n').map((s) => s.trim()).filter(Boolean);
    if (!sentences.length) return;
    setBusy(true);
    setError('');
    try {
      const body = await (await call('/v1/similarities', { json: { sentences } })).json();
      setResult({ sentences, matrix: body.similarities });
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="panel">
      <form onSubmit={compare} class="stack">
        <label for="emb-sentences">Sentences, one a line</label>
        <textarea id="emb-sentences" rows={6} value={text}
          onInput={(e) => setText(e.currentTarget.value)} />
        <div><button type="submit" disabled={busy}>Compare</button></div>
      </form>
      <ErrorLine message={error} />
      {result && <Heatmap sentences={result.sentences} matrix={result.matrix} />}
    </div>
  );
}
