// The served models: ids and kinds from /v1/models (older servers: kinds from /ready).
import { call } from './api.js';

export async function readiness() {
  const response = await fetch('/ready');
  return response.json();
}

/** Every model's state, memory and requests from /v1/status (under the API key). */
export async function modelStatus() {
  return (await call('/v1/status')).json();
}

/** {id, kind} for every served model and alias; throws ApiError (e.g. 401) from /v1/models. */
export async function servedModels() {
  const list = await call('/v1/models').then((r) => r.json());
  if (list.data.every((m) => m.kind)) return list.data.map((m) => ({ id: m.id, kind: m.kind }));
  const ready = await readiness().catch(() => ({ models: [] }));
  const kinds = Object.fromEntries((ready.models || []).map((m) => [m.id, m.kind]));
  return list.data.map((m) => ({ id: m.id, kind: m.kind || kinds[m.id] || 'unknown' }));
}

export function ofKind(models, kind) {
  const matching = models.filter((m) => m.kind === kind);
  return matching.length ? matching : models.filter((m) => m.kind === 'unknown');
}
