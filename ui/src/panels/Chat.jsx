import { useEffect, useRef, useState } from 'preact/hooks';
import { call, messageOf } from '../api.js';
import { readEvents } from '../sse.js';
import { renderMarkdown } from '../markdown.js';
import { loadConversations, newConversation, saveConversations, titleOf } from '../conversations.js';
import { download } from '../download.js';
import { useModels } from './useModels.js';
import { ErrorLine } from './ErrorLine.jsx';

function Message({ message }) {
  if (message.role === 'user') {
    return <div class="msg user"><span class="who">You</span><p>{message.content}</p></div>;
  }
  const stats = message.usage
    ? `${message.usage.prompt_tokens} prompt + ${message.usage.completion_tokens} completion tokens` +
      (message.tokensPerSecond ? `, ${message.tokensPerSecond.toFixed(1)} tokens/s` : '')
    : '';
  return (
    <div class="msg assistant">
      <span class="who">Assistant</span>
      <div class="markdown" dangerouslySetInnerHTML={{ __html: renderMarkdown(message.content) }} />
      {message.stopped && <p class="note">Stopped.</p>}
      {stats && <p class="note usage">{stats}</p>}
    </div>
  );
}

function initialState() {
  const list = loadConversations();
  return list.length ? list : [newConversation()];
}

export function Chat() {
  const [models, modelError] = useModels('chat');
  const [conversations, setConversations] = useState(initialState);
  const [currentId, setCurrentId] = useState(() => conversations[0].id);
  const [model, setModel] = useState('');
  const [system, setSystem] = useState('You are a helpful assistant.');
  const [temperature, setTemperature] = useState(0.7);
  const [topP, setTopP] = useState(0.9);
  const [maxTokens, setMaxTokens] = useState(128);
  const [draft, setDraft] = useState('');
  const [error, setError] = useState('');
  const [streaming, setStreaming] = useState(false);
  const controller = useRef(null);

  const current = conversations.find((c) => c.id === currentId) || conversations[0];
  useEffect(() => saveConversations(conversations), [conversations]);
  useEffect(() => {
    if (models.length && !models.some((m) => m.id === model)) setModel(models[0].id);
  }, [models]);

  const update = (id, change) =>
    setConversations((list) => list.map((c) => (c.id === id ? change(c) : c)));

  const send = async (event) => {
    event.preventDefault();
    const text = draft.trim();
    if (!text || streaming) return;
    setDraft('');
    setError('');
    const id = current.id;
    const history = [...current.messages, { role: 'user', content: text }];
    update(id, (c) => ({ ...c, title: c.messages.length ? c.title : titleOf(text),
      messages: [...history, { role: 'assistant', content: '' }] }));
    const setReply = (change) => update(id, (c) => {
      const messages = [...c.messages];
      messages[messages.length - 1] = change(messages[messages.length - 1]);
      return { ...c, messages };
    });
    const abort = new AbortController();
    controller.current = abort;
    setStreaming(true);
    let firstTokenAt = 0;
    try {
      // Only role and content go to the server: the stored messages also hold usage figures.
      const turns = history.map(({ role, content }) => ({ role, content }));
      const messages = system.trim()
        ? [{ role: 'system', content: system.trim() }, ...turns] : turns;
      const response = await call('/v1/chat/completions', {
        signal: abort.signal,
        json: { model, messages, stream: true, stream_options: { include_usage: true },
          temperature: Number(temperature), top_p: Number(topP), max_tokens: Number(maxTokens) },
      });
      for await (const chunk of readEvents(response)) {
        const piece = chunk.choices?.[0]?.delta?.content;
        if (piece) {
          firstTokenAt ||= performance.now();
          setReply((m) => ({ ...m, content: m.content + piece }));
        }
        if (chunk.usage) {
          const seconds = firstTokenAt ? (performance.now() - firstTokenAt) / 1000 : 0;
          const tokensPerSecond = seconds > 0 && chunk.usage.completion_tokens > 1
            ? (chunk.usage.completion_tokens - 1) / seconds : 0;
          setReply((m) => ({ ...m, usage: chunk.usage, tokensPerSecond }));
        }
      }
    } catch (e) {
      if (e?.name === 'AbortError') setReply((m) => ({ ...m, stopped: true }));
      else {
        setError(messageOf(e));
        // a reply that never started is dropped, so the failed turn can be sent again
        update(id, (c) => {
          const last = c.messages[c.messages.length - 1];
          return last?.role === 'assistant' && !last.content
            ? { ...c, messages: c.messages.slice(0, -1) } : c;
        });
      }
    } finally {
      setStreaming(false);
      controller.current = null;
    }
  };

  const stop = () => controller.current?.abort();
  const create = () => {
    const fresh = newConversation();
    setConversations((list) => [fresh, ...list]);
    setCurrentId(fresh.id);
  };
  const remove = () => {
    const rest = conversations.filter((c) => c.id !== current.id);
    const next = rest.length ? rest : [newConversation()];
    setConversations(next);
    setCurrentId(next[0].id);
  };
  const exportAll = () => download(
    new Blob([JSON.stringify(conversations, null, 2)], { type: 'application/json' }),
    'conversations.json');

  return (
    <div class="chat">
      <aside class="side">
        <div class="row">
          <button type="button" onClick={create} disabled={streaming}>New</button>
          <button type="button" onClick={remove} disabled={streaming}>Delete</button>
          <button type="button" onClick={exportAll}>Export JSON</button>
        </div>
        <ul class="conversations" aria-label="Conversations">
          {conversations.map((c) => (
            <li key={c.id}>
              <button type="button" class={c.id === current.id ? 'conv active' : 'conv'}
                aria-current={c.id === current.id ? 'true' : undefined}
                disabled={streaming} onClick={() => setCurrentId(c.id)}>{c.title}</button>
            </li>
          ))}
        </ul>
        <div class="settings">
          <label for="chat-model">Model</label>
          <select id="chat-model" value={model} onChange={(e) => setModel(e.currentTarget.value)}>
            {models.map((m) => <option key={m.id} value={m.id}>{m.id}</option>)}
          </select>
          <label for="chat-system">System prompt</label>
          <textarea id="chat-system" rows={3} value={system}
            onInput={(e) => setSystem(e.currentTarget.value)} />
          <label for="chat-temperature">Temperature {temperature}</label>
          <input id="chat-temperature" type="range" min="0" max="2" step="0.05" value={temperature}
            onInput={(e) => setTemperature(e.currentTarget.value)} />
          <label for="chat-top-p">Top p {topP}</label>
          <input id="chat-top-p" type="range" min="0.05" max="1" step="0.05" value={topP}
            onInput={(e) => setTopP(e.currentTarget.value)} />
          <label for="chat-max-tokens">Max tokens</label>
          <input id="chat-max-tokens" type="number" min="1" max="2048" value={maxTokens}
            onInput={(e) => setMaxTokens(e.currentTarget.value)} />
        </div>
      </aside>
      <div class="thread">
        <ErrorLine message={modelError || error} />
        <div class="messages" aria-live="polite">
          {current.messages.map((m, i) => <Message key={i} message={m} />)}
        </div>
        <form class="compose" onSubmit={send}>
          <label for="chat-input" class="visually-hidden">Message</label>
          <textarea id="chat-input" rows={3} value={draft} placeholder="Ask something…"
            onInput={(e) => setDraft(e.currentTarget.value)}
            onKeyDown={(e) => { if (e.key === 'Enter' && !e.shiftKey) send(e); }} />
          {/* keyed: a reused <button> would still be type=submit when Stop is clicked */}
          {streaming
            ? <button key="stop" type="button" class="stop" onClick={stop}>Stop</button>
            : <button key="send" type="submit" disabled={!model}>Send</button>}
        </form>
      </div>
    </div>
  );
}
