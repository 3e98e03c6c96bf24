/**
 * Waiting in tests. Wait for a condition (until), never for a time: a fixed
 * pause that is long enough here is too short on a loaded CI machine.
 * settle() is for the other case only: giving something the chance to happen
 * that must NOT happen (a duplicate, a late event), or pacing a load.
 */

/** Polls check() until it returns something other than undefined or false; throws after timeoutMs. */
export async function until<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await settle(20);
  }
}

/** A pause: see above for the only two uses. */
export const settle = (ms = 150): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
