/**
 * Text from etcd, from weftd's /status or from the kernel is data other people wrote: a lease key
 * or BackendType holding ESC sequences would, printed raw, rewrite the operator's terminal (hide
 * a row, retitle the window, forge output) — terminal injection. Everything the CLI prints goes
 * through escapeControl(): at the output seam (cli/io.ts, keeping newlines and tabs) and per
 * table cell (where a newline would forge a row, so nothing is kept).
 */

// C0 controls, DEL, C1 controls (U+0080..U+009F: 8-bit CSI/OSC as terminals read UTF-8), the
// Unicode line/paragraph separators and the bidirectional overrides/isolates (which reorder
// what is shown: "Trojan Source").
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;

/**
 * `text` with every control character written as `\u00XX` (a form that is also a valid escape
 * inside a JSON string, so `-o json` output stays JSON). Characters in `keep` (e.g. "\n\t" for
 * whole documents) are left as they are.
 */
export function escapeControl(text: string, keep = ''): string {
  return text.replace(UNSAFE, (ch) => (keep.includes(ch) ? ch : `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`));
}
