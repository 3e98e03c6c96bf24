/** For the fault suite (npm run test:faults): the figures each case reports for docs/RELIABILITY.md. */
import { appendFileSync } from 'node:fs';

/** One line of docs/RELIABILITY.md: the case, what was measured, whether it held. */
export function record(name: string, figure: string, ok: boolean): void {
  const file = process.env['FAULTS_RESULTS'];
  if (file) appendFileSync(file, `${JSON.stringify({ name, figure, ok })}\n`);
}
