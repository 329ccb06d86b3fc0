/**
 * The native side runs on its own threads and never holds the event loop; an open node or peer
 * holds it with one timer, released on `close()`, so the process exits by itself afterwards.
 * @internal
 */
export function holdEventLoop(): () => void {
  const timer = setInterval(() => {}, 2 ** 31 - 1)
  return () => clearInterval(timer)
}
