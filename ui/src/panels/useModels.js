import { useEffect, useState } from 'preact/hooks';
import { messageOf, onKeyChange } from '../api.js';
import { ofKind, servedModels } from '../models.js';

/** The served models of one kind, fetched again when the API key changes. */
export function useModels(kind) {
  const [models, setModels] = useState([]);
  const [error, setError] = useState('');
  useEffect(() => {
    const load = () => servedModels()
      .then((all) => { setModels(ofKind(all, kind)); setError(''); })
      .catch((e) => setError(messageOf(e)));
    load();
    return onKeyChange(load);
  }, [kind]);
  return [models, error];
}
