/** A failure shown to the user; announced to screen readers. */
export function ErrorLine({ message }) {
  if (!message) return null;
  return <p class="error" role="alert">{message}</p>;
}
