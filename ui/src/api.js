// Requests to the server: the stored API key as the bearer header, and readable errors.
const KEY_STORAGE = 'labs-playground.api-key';
const listeners = new Set();

export function getKey() {
  return localStorage.getItem(KEY_STORAGE) || '';
}

export function setKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
  listeners.forEach((fn) => fn(key));
}

export function onKeyChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function describeFailure(status, serverMessage, retryAfter) {
  const wait = retryAfter ? ` Retry in ${retryAfter} s.` : '';
  if (status === 401) {
    return 'Unauthorized (401): this server needs an API key. Enter a valid key in the ' +
      '"API key" field at the top of the page.';
  }
  if (status === 429) return `Too many requests (429): the rate limit was reached.${wait}`;
  if (status === 503) {
    return `Service unavailable (503): a model is loading or the server is busy.${wait}` +
      (serverMessage ? ` (${serverMessage})` : '');
  }
  return `Error ${status}: ${serverMessage || 'the request failed'}`;
}

async function failureOf(response) {
  let message = '';
  try {
    const body = await response.json();
    message = body?.error?.message || '';
  } catch {
    // not JSON: keep the status alone
  }
  return new ApiError(response.status,
    describeFailure(response.status, message, response.headers.get('Retry-After')));
}

/** fetch() with the key; throws ApiError with a readable message when the status is not 2xx. */
export async function call(path, { json, body, signal, method } = {}) {
  const headers = {};
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method: method || (json !== undefined || body !== undefined ? 'POST' : 'GET'),
    headers,
    body: json !== undefined ? JSON.stringify(json) : body,
    signal,
  });
  if (!response.ok) throw await failureOf(response);
  return response;
}

export function messageOf(error) {
  if (error instanceof ApiError) return error.message;
  if (error?.name === 'AbortError') return 'Stopped.';
  return `Could not reach the server: ${error?.message || error}`;
}
