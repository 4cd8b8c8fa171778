import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { z } from 'zod';
import { Pool, Routing } from '../../mta/config/schema.ts';
import { chooseVirtualMta, PoolSelector, type RoutingRequest } from '../../mta/routing/virtual-mta-choice.ts';
import { matchesDomainPattern } from '../../mta/routing/domain-pattern.ts';

const pool = Pool.parse({
  name: 'main',
  virtualMtas: [
    { name: 'vmta-a', hostname: 'a.example.com' },
    { name: 'vmta-b', hostname: 'b.example.com' },
    { name: 'vmta-c', hostname: 'c.example.com' },
  ],
});

function request(overrides: Partial<Omit<RoutingRequest, 'routing'>> & { routing?: z.input<typeof Routing> } = {}): RoutingRequest {
  const { routing, ...rest } = overrides;
  return {
    routing: Routing.parse(routing ?? {}),
    pool,
    mailFrom: 'news@shop.example.org',
    recipientDomains: ['gmail.com'],
    ...rest,
  };
}

describe('domain patterns', () => {
  it('matches exact domains case-insensitively, "*.x" only below x, "*" everything but no domain', () => {
    assert.equal(matchesDomainPattern('Example.COM.', 'example.com'), true);
    assert.equal(matchesDomainPattern('mail.example.com', 'example.com'), false);
    assert.equal(matchesDomainPattern('mail.example.com', '*.example.com'), true);
    assert.equal(matchesDomainPattern('example.com', '*.example.com'), false);
    assert.equal(matchesDomainPattern('badexample.com', '*.example.com'), false);
    assert.equal(matchesDomainPattern('anything.net', '*'), true);
    assert.equal(matchesDomainPattern('', '*'), false);
  });
});

describe('chooseVirtualMta', () => {
  it('honours X-Virtual-MTA when the policy allows it and the name is in the pool', () => {
    const decision = chooseVirtualMta(request({ routing: { honorVirtualMtaHeader: true, defaultVirtualMta: 'vmta-a' }, virtualMtaHeader: ' VMTA-C ' }), new PoolSelector());
    assert.deepEqual(decision, { virtualMta: 'vmta-c', reason: 'header' });
  });

  it('ignores X-Virtual-MTA when the policy does not honour it', () => {
    const decision = chooseVirtualMta(request({ routing: { defaultVirtualMta: 'vmta-a' }, virtualMtaHeader: 'vmta-c' }), new PoolSelector());
    assert.deepEqual(decision, { virtualMta: 'vmta-a', reason: 'default', ignoredHeader: 'not-honoured' });
  });

  it('falls through to the rules when X-Virtual-MTA names no VirtualMTA of the pool', () => {
    const routing = { honorVirtualMtaHeader: true, rules: [{ senderDomain: '*.example.org', virtualMta: 'vmta-b' }] };
    const decision = chooseVirtualMta(request({ routing, virtualMtaHeader: 'vmta-elsewhere' }), new PoolSelector());
    assert.deepEqual(decision, { virtualMta: 'vmta-b', reason: 'rule', ruleIndex: 0, ignoredHeader: 'unknown-virtual-mta' });
  });

  it('routes by sender domain, exact and wildcard, first matching rule winning', () => {
    const routing = {
      rules: [
        { senderDomain: 'example.org', virtualMta: 'vmta-a' },
        { senderDomain: '*.example.org', virtualMta: 'vmta-b' },
        { senderDomain: '*', virtualMta: 'vmta-c' },
      ],
    };
    const selector = new PoolSelector();
    assert.equal(chooseVirtualMta(request({ routing, mailFrom: 'x@Example.org' }), selector).virtualMta, 'vmta-a');
    assert.equal(chooseVirtualMta(request({ routing, mailFrom: 'x@shop.example.org' }), selector).virtualMta, 'vmta-b');
    assert.deepEqual(chooseVirtualMta(request({ routing, mailFrom: 'x@other.net' }), selector), { virtualMta: 'vmta-c', reason: 'rule', ruleIndex: 2 });
  });

  it('never matches a sender-domain rule for the null sender', () => {
    const routing = { rules: [{ senderDomain: '*', virtualMta: 'vmta-c' }], defaultVirtualMta: 'vmta-a' };
    assert.deepEqual(chooseVirtualMta(request({ routing, mailFrom: '' }), new PoolSelector()), { virtualMta: 'vmta-a', reason: 'default' });
  });

  it('routes by authenticated user, exactly', () => {
    const routing = { rules: [{ user: 'alice', virtualMta: 'vmta-b' }], defaultVirtualMta: 'vmta-a' };
    assert.equal(chooseVirtualMta(request({ routing, user: 'alice' }), new PoolSelector()).virtualMta, 'vmta-b');
    assert.equal(chooseVirtualMta(request({ routing, user: 'Alice' }), new PoolSelector()).virtualMta, 'vmta-a');
    assert.equal(chooseVirtualMta(request({ routing }), new PoolSelector()).virtualMta, 'vmta-a');
  });

  it('routes by recipient domain only when every recipient matches', () => {
    const routing = { rules: [{ recipientDomain: '*.example.net', virtualMta: 'vmta-c' }], defaultVirtualMta: 'vmta-a' };
    assert.equal(chooseVirtualMta(request({ routing, recipientDomains: ['mx.example.net', 'b.example.net'] }), new PoolSelector()).virtualMta, 'vmta-c');
    assert.equal(chooseVirtualMta(request({ routing, recipientDomains: ['mx.example.net', 'gmail.com'] }), new PoolSelector()).virtualMta, 'vmta-a');
  });

  it('requires every field of a rule to match', () => {
    const routing = { rules: [{ user: 'alice', senderDomain: 'example.org', virtualMta: 'vmta-c' }], defaultVirtualMta: 'vmta-a' };
    assert.equal(chooseVirtualMta(request({ routing, user: 'alice', mailFrom: 'a@example.org' }), new PoolSelector()).virtualMta, 'vmta-c');
    assert.equal(chooseVirtualMta(request({ routing, user: 'alice', mailFrom: 'a@example.com' }), new PoolSelector()).virtualMta, 'vmta-a');
    assert.equal(chooseVirtualMta(request({ routing, user: 'bob', mailFrom: 'a@example.org' }), new PoolSelector()).virtualMta, 'vmta-a');
  });

  it('round-robins over the pool when nothing else decides', () => {
    const selector = new PoolSelector();
    const picks = Array.from({ length: 7 }, () => chooseVirtualMta(request(), selector));
    assert.deepEqual(picks.map((pick) => pick.virtualMta), ['vmta-a', 'vmta-b', 'vmta-c', 'vmta-a', 'vmta-b', 'vmta-c', 'vmta-a']);
    assert.ok(picks.every((pick) => pick.reason === 'pool'));
  });

  it('gives each VirtualMTA exactly its weight over every window of sum(weights) picks, interleaved', () => {
    const weighted = Pool.parse({
      name: 'main',
      selection: 'weighted',
      virtualMtas: [
        { name: 'vmta-a', hostname: 'a.example.com', weight: 5 },
        { name: 'vmta-b', hostname: 'b.example.com', weight: 1 },
        { name: 'vmta-c', hostname: 'c.example.com', weight: 1 },
      ],
    });
    const selector = new PoolSelector();
    const picks = Array.from({ length: 7 * 100 }, () => chooseVirtualMta(request({ pool: weighted }), selector).virtualMta);
    for (let window = 0; window < picks.length; window += 7) {
      const counts = new Map<string, number>();
      for (const pick of picks.slice(window, window + 7)) counts.set(pick, (counts.get(pick) ?? 0) + 1);
      assert.deepEqual(Object.fromEntries(counts), { 'vmta-a': 5, 'vmta-b': 1, 'vmta-c': 1 }, `window at ${window}`);
    }
    // Smooth: the heavy VirtualMTA is never picked more than three times in a row for 5:1:1.
    assert.deepEqual(picks.slice(0, 7), ['vmta-a', 'vmta-a', 'vmta-b', 'vmta-a', 'vmta-c', 'vmta-a', 'vmta-a']);
  });

  it('restarts the rotation when the pool changes (hot reload)', () => {
    const selector = new PoolSelector();
    chooseVirtualMta(request(), selector);
    const smaller = Pool.parse({ name: 'main', virtualMtas: [{ name: 'vmta-x', hostname: 'x.example.com' }, { name: 'vmta-y', hostname: 'y.example.com' }] });
    const picks = Array.from({ length: 3 }, () => chooseVirtualMta(request({ pool: smaller }), selector).virtualMta);
    assert.deepEqual(picks, ['vmta-x', 'vmta-y', 'vmta-x']);
  });
});
