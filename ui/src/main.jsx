import { render } from 'preact';
import { useState } from 'preact/hooks';
import 'highlight.js/styles/github.css';
import './style.css';
import { KeyField } from './panels/KeyField.jsx';
import { Chat } from './panels/Chat.jsx';
import { Speech } from './panels/Speech.jsx';
import { Transcription } from './panels/Transcription.jsx';
import { Embeddings } from './panels/Embeddings.jsx';
import { Server } from './panels/Server.jsx';

const TABS = [
  ['chat', 'Chat', Chat],
  ['speech', 'Speech', Speech],
  ['transcription', 'Transcription', Transcription],
  ['embeddings', 'Embeddings', Embeddings],
  ['server', 'Server', Server],
];

function initialTab() {
  const name = location.hash.slice(1);
  return TABS.some(([id]) => id === name) ? name : 'chat';
}

function App() {
  const [tab, setTab] = useState(initialTab);
  const choose = (id) => {
    setTab(id);
    history.replaceState(null, '', `#${id}`);
  };
  return (
    <>
      <header class="top">
        <h1>AI Labs API playground</h1>
        <KeyField />
      </header>
      <nav>
        <div role="tablist" aria-label="Playground sections" class="tabs">
          {TABS.map(([id, label]) => (
            <button key={id} role="tab" id={`tab-${id}`} aria-controls={`panel-${id}`}
              aria-selected={tab === id} class={tab === id ? 'tab active' : 'tab'}
              onClick={() => choose(id)}>{label}</button>
          ))}
        </div>
      </nav>
      <main>
        {TABS.map(([id, , Panel]) => (
          <section key={id} role="tabpanel" id={`panel-${id}`} aria-labelledby={`tab-${id}`}
            hidden={tab !== id}>
            <Panel active={tab === id} />
          </section>
        ))}
      </main>
    </>
  );
}

render(<App />, document.getElementById('app'));
