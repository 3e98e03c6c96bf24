/**
 * Where webhooks may not go: loopback, link-local (cloud metadata at
 * 169.254.169.254), unspecified and multicast addresses, unless
 * --webhook-allow-local. Checked on the address a URL resolves to when the
 * connection is made (a name that resolves to 127.0.0.1 is refused too, and
 * so is a DNS answer that changes between two lookups), and on IP literals,
 * which are never looked up.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';

const blocked = new BlockList();
blocked.addSubnet('127.0.0.0', 8, 'ipv4');
blocked.addSubnet('0.0.0.0', 8, 'ipv4');
blocked.addSubnet('169.254.0.0', 16, 'ipv4');
blocked.addSubnet('224.0.0.0', 4, 'ipv4');
blocked.addSubnet('240.0.0.0', 4, 'ipv4');
blocked.addAddress('::1', 'ipv6');
blocked.addAddress('::', 'ipv6');
blocked.addSubnet('fe80::', 10, 'ipv6');
blocked.addSubnet('ff00::', 8, 'ipv6');

/** What an attempt records when it was refused for its address. */
export const BLOCKED = 'blocked address (loopback or link-local; --webhook-allow-local permits it)';

/** Whether an IP address is one webhooks may not reach. */
export function isBlockedAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family !== 6) return false;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped?.[1] !== undefined ? blocked.check(mapped[1], 'ipv4') : blocked.check(address, 'ipv6');
}

/** A URL whose host is an IP literal webhooks may not reach (names are checked at connect). */
export function isBlockedUrl(url: string): boolean {
  let host: string;
  try {
    host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return false;
  }
  return isBlockedAddress(host);
}

/** dns.lookup for net.connect, without the addresses webhooks may not reach. */
export const lookupAllowed: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
    if (err) {
      callback(err, '', 0);
      return;
    }
    const allowed = addresses.filter((a) => !isBlockedAddress(a.address));
    if (allowed.length === 0) {
      callback(Object.assign(new Error(BLOCKED), { code: 'EBLOCKED' }), '', 0);
      return;
    }
    if ((options as { all?: boolean }).all) {
      (callback as unknown as (err: null, addresses: LookupAddress[]) => void)(null, allowed);
      return;
    }
    const first = allowed[0] as LookupAddress;
    callback(null, first.address, first.family);
  });
};
