import { escapeControl } from '../text';

/** Output seam of the CLI commands, so tests can capture what a command prints. */
export interface CliIO {
  out(text: string): void;
  err(text: string): void;
}

/** Everything printed goes through escapeControl (terminal injection: src/text.ts); newlines and tabs stay. */
export const stdio: CliIO = {
  out: (t) => process.stdout.write(safeLine(t)),
  err: (t) => process.stderr.write(safeLine(t)),
};

export function safeLine(t: string): string {
  const s = escapeControl(t, '\n\t');
  return s.endsWith('\n') ? s : s + '\n';
}
