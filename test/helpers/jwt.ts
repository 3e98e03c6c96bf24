import { SignJWT } from 'jose';

export const SECRET = 'test-secret-0123456789abcdef-0123456789abcdef';
export const ALICE = 'a11ce000-0000-4000-8000-000000000001';
export const BOB = 'b0b00000-0000-4000-8000-000000000002';

/** An HS256 token; `expiresIn` in seconds from now (negative: already expired). */
export async function sign(
  claims: Record<string, unknown>,
  options: { secret?: string; expiresIn?: number; notBefore?: number } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setIssuedAt(now - 1);
  jwt = jwt.setExpirationTime(now + (options.expiresIn ?? 3600));
  if (options.notBefore !== undefined) jwt = jwt.setNotBefore(now + options.notBefore);
  return jwt.sign(new TextEncoder().encode(options.secret ?? SECRET));
}

export const userToken = (sub: string, extra: Record<string, unknown> = {}): Promise<string> =>
  sign({ sub, role: 'authenticated', ...extra });

/** An unsigned token with alg "none", as an attacker would send it. */
export function unsignedToken(claims: Record<string, unknown>): string {
  const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}.`;
}
