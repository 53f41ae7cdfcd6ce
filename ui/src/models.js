// The served models: ids from /v1/models, kinds from /ready (which every client may read).
import { call } from './api.js';

export async function readiness() {
  const response = await fetch('/ready');
  return response.json();
}

/** {id: kind} for every served model; throws ApiError (e.g. 401) from /v1/models. */
export async function servedModels() {
  const [list, ready] = await Promise.all([
    call('/v1/models').then((r) => r.json()),
    readiness().catch(() => ({ models: [] })),
  ]);
  const kinds = Object.fromEntries((ready.models || []).map((m) => [m.id, m.kind]));
  return list.data.map((m) => ({ id: m.id, kind: kinds[m.id] || 'unknown' }));
}

export function ofKind(models, kind) {
  const matching = models.filter((m) => m.kind === kind);
  return matching.length ? matching : models.filter((m) => m.kind === 'unknown');
}
