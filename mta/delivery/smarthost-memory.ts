// What the relay remembers of each smarthost route between sessions, in memory only (a restarted
// relay probes once more):
//   - the port that worked after a fallback (587 refused, then 2525 answered), with the reasons
//     of the fallback, so the next sessions go straight to it instead of paying the timeout again;
//     after `reprobeAfter` the list is tried from its start again (the block may have been lifted).
//     Kept per source address: VirtualMTAs leaving from other addresses may not be blocked alike;
//   - a refused login: the same credentials are not offered again until `reprobeAfter` has passed
//     or the Secret changed (a server locks out a client that keeps failing AUTH; ESPs do too).
import { createHash } from 'node:crypto';
import type { SmarthostConfig } from '../config/schema.ts';
import type { SmarthostLogin } from './smarthost-credentials.ts';

/** Why a port (on one host address) was passed over; the accounting record carries these. */
export interface PortFallback {
  host: string;
  port: number;
  tls: 'starttls' | 'implicit';
  /** refused: nothing listens; timeout: no answer or no greeting in time; greeting: the server refused the session; tls: no TLS could be set up; connection: the connection broke. */
  reason: 'refused' | 'timeout' | 'greeting' | 'tls' | 'connection';
  detail: string;
  /** ISO time the port failed. */
  at: string;
}

interface WorkingPort {
  index: number;
  fallbacks: PortFallback[];
  until: number;
}

interface RefusedLogin {
  /** sha256 of the refused user and password: compared, never shown. */
  fingerprint: string;
  reply: string;
  at: number;
  until: number;
}

function loginFingerprint(login: SmarthostLogin): string {
  return createHash('sha256').update(`${login.user}\0${login.pass}`).digest('hex');
}

export class SmarthostMemory {
  readonly #ports = new Map<string, WorkingPort>();
  readonly #refusedLogins = new Map<string, RefusedLogin>();

  static #loginKey(route: SmarthostConfig): string {
    return JSON.stringify([route.hosts, route.ports]);
  }

  static #portKey(route: SmarthostConfig, sourceAddress: string | undefined): string {
    return JSON.stringify([route.hosts, route.ports, sourceAddress ?? null]);
  }

  /** Port indexes in the order to try: the remembered one first (with the fallbacks that led to it), then the rest of the list, wrapping around. */
  plan(route: SmarthostConfig, sourceAddress: string | undefined, now: number): { order: number[]; remembered: PortFallback[] } {
    const key = SmarthostMemory.#portKey(route, sourceAddress);
    const entry = this.#ports.get(key);
    if (entry && now >= entry.until) this.#ports.delete(key);
    const start = entry && now < entry.until && entry.index < route.ports.length ? entry.index : 0;
    const order = route.ports.map((_, offset) => (start + offset) % route.ports.length);
    return { order, remembered: start === 0 ? [] : entry!.fallbacks };
  }

  /** The session worked on ports[index] after these fallbacks (all of them, remembered ones included). */
  worked(route: SmarthostConfig, sourceAddress: string | undefined, index: number, fallbacks: readonly PortFallback[], now: number): void {
    const key = SmarthostMemory.#portKey(route, sourceAddress);
    if (index === 0) {
      this.#ports.delete(key);
      return;
    }
    if (this.#ports.get(key)?.index === index) return;
    this.#ports.set(key, { index, fallbacks: [...fallbacks], until: now + route.reprobeAfter });
  }

  loginRefused(route: SmarthostConfig, login: SmarthostLogin, reply: string, now: number): void {
    this.#refusedLogins.set(SmarthostMemory.#loginKey(route), { fingerprint: loginFingerprint(login), reply, at: now, until: now + route.reprobeAfter });
  }

  loginAccepted(route: SmarthostConfig): void {
    this.#refusedLogins.delete(SmarthostMemory.#loginKey(route));
  }

  /** Why this login is not offered now (it was refused, and neither reprobeAfter nor a change of the Secret has come since); undefined when it may be. */
  heldLogin(route: SmarthostConfig, login: SmarthostLogin, now: number): string | undefined {
    const refused = this.#refusedLogins.get(SmarthostMemory.#loginKey(route));
    if (!refused || now >= refused.until || refused.fingerprint !== loginFingerprint(login)) return undefined;
    return `smarthost ${route.hosts.join(', ')} refused this login at ${new Date(refused.at).toISOString()} (${refused.reply}); it is offered again at ${new Date(refused.until).toISOString()} or once the Secret changes`;
  }
}
