import { useState } from 'preact/hooks';
import { getKey, setKey } from '../api.js';

/** The API key, kept in localStorage and sent by every request as the bearer header. */
export function KeyField() {
  const [value, setValue] = useState(getKey);
  const save = (event) => {
    event.preventDefault();
    setKey(value.trim());
  };
  return (
    <form class="key" onSubmit={save}>
      <label for="api-key">API key</label>
      <input id="api-key" type="password" autocomplete="off" value={value}
        placeholder="only if the server sets LABS_API_KEY"
        onInput={(e) => setValue(e.currentTarget.value)} />
      <button type="submit">Save key</button>
    </form>
  );
}
