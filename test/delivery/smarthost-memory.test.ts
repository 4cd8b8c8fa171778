// What the relay remembers of a smarthost route: the port that worked after a fallback comes
// first until reprobeAfter, then the list starts over; a remembered port that fails wraps around
// the list; a refused login is held until reprobeAfter or until the credentials change, and an
// accepted one clears the hold. Routes with other hosts or ports, and sessions from other source
// addresses, do not share a remembered port.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SmarthostSettings } from '../../mta/config/schema.ts';
import { SmarthostMemory, type PortFallback } from '../../mta/delivery/smarthost-memory.ts';

const route = SmarthostSettings.parse({ hosts: ['smtp.esp.example'], reprobeAfter: '10m' });
const MINUTE = 60_000;
const SOURCE = '192.0.2.10';
const fallback = (port: number, at: number): PortFallback => ({ host: '192.0.2.25', port, tls: 'starttls', reason: 'timeout', detail: 'Greeting never received', at: new Date(at).toISOString() });

test('with nothing remembered every port is tried from the first, in order', () => {
  assert.deepEqual(new SmarthostMemory().plan(route, SOURCE, 0), { order: [0, 1, 2], remembered: [] });
});

test('the port that worked after a fallback comes first, with its fallbacks, until reprobeAfter', () => {
  for (const worked of [1, 2]) {
    const memory = new SmarthostMemory();
    const fallbacks = Array.from({ length: worked }, (_, index) => fallback(route.ports[index]!.port, 0));
    memory.worked(route, SOURCE, worked, fallbacks, 0);
    const expected = [0, 1, 2].map((offset) => (worked + offset) % 3);
    assert.deepEqual(memory.plan(route, SOURCE, 9 * MINUTE), { order: expected, remembered: fallbacks }, `worked on ports[${worked}]`);
    assert.deepEqual(memory.plan(route, SOURCE, 10 * MINUTE), { order: [0, 1, 2], remembered: [] }, 'reprobed after 10m');
    assert.deepEqual(memory.plan(route, SOURCE, 9 * MINUTE), { order: [0, 1, 2], remembered: [] }, 'a reprobe forgets');
  }
});

test('working on the first port again forgets the fallback; working again on the remembered one keeps its time', () => {
  const memory = new SmarthostMemory();
  memory.worked(route, SOURCE, 1, [fallback(587, 0)], 0);
  memory.worked(route, SOURCE, 1, [fallback(587, 0)], 8 * MINUTE);
  assert.deepEqual(memory.plan(route, SOURCE, 10 * MINUTE).order, [0, 1, 2], 'the reprobe time is not pushed back');
  memory.worked(route, SOURCE, 2, [fallback(587, 0), fallback(2525, 0)], 0);
  memory.worked(route, SOURCE, 0, [], MINUTE);
  assert.deepEqual(memory.plan(route, SOURCE, 2 * MINUTE).order, [0, 1, 2]);
});

test('routes with other hosts or other ports, and other source addresses, do not share a remembered port', () => {
  const memory = new SmarthostMemory();
  memory.worked(route, SOURCE, 1, [fallback(587, 0)], 0);
  for (const other of [SmarthostSettings.parse({ hosts: ['other.esp.example'] }), SmarthostSettings.parse({ hosts: ['smtp.esp.example'], ports: [{ port: 587, tls: 'starttls' }, { port: 465, tls: 'implicit' }] })]) {
    assert.deepEqual(memory.plan(other, SOURCE, MINUTE).order, other.ports.map((_, index) => index));
  }
  for (const source of ['192.0.2.11', undefined]) assert.deepEqual(memory.plan(route, source, MINUTE).order, [0, 1, 2], `from ${source ?? 'the default address'}`);
  assert.deepEqual(memory.plan(route, SOURCE, MINUTE).order, [1, 2, 0]);
});

test('a refused login is held until reprobeAfter or a change of user or password; an accepted login clears the hold', () => {
  const login = { user: 'acme', pass: 'secret-1' };
  const memory = new SmarthostMemory();
  assert.equal(memory.heldLogin(route, login, 0), undefined);
  memory.loginRefused(route, login, '535 5.7.8 Authentication credentials invalid', 0);
  const held = memory.heldLogin(route, login, 9 * MINUTE);
  assert.match(held ?? '', /refused this login at 1970-01-01T00:00:00.000Z \(535 5\.7\.8 .*\); it is offered again at 1970-01-01T00:10:00.000Z or once the Secret changes/);
  assert.ok(!held!.includes(login.pass), 'the reason never shows the password');
  assert.equal(memory.heldLogin(route, { ...login, pass: 'secret-2' }, MINUTE), undefined, 'a new password is tried');
  assert.equal(memory.heldLogin(route, { ...login, user: 'acme2' }, MINUTE), undefined, 'a new user is tried');
  assert.equal(memory.heldLogin(route, login, 10 * MINUTE), undefined, 'tried again after reprobeAfter');
  memory.loginRefused(route, login, '535', 20 * MINUTE);
  memory.loginAccepted(route);
  assert.equal(memory.heldLogin(route, login, 21 * MINUTE), undefined);
});
