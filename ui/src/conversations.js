// Conversations kept in the browser's localStorage.
const STORAGE = 'labs-playground.conversations';

export function loadConversations() {
  try {
    const list = JSON.parse(localStorage.getItem(STORAGE) || '[]');
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

export function saveConversations(list) {
  localStorage.setItem(STORAGE, JSON.stringify(list));
}

export function newConversation() {
  return { id: `c${Date.now()}${Math.random().toString(36).slice(2, 6)}`, title: 'New chat',
    created: new Date().toISOString(), messages: [] };
}

export function titleOf(text) {
  const line = text.trim().split('\n')[0];
  return line.length > 40 ? `${line.slice(0, 40)}…` : line || 'New chat';
}
