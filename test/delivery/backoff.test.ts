import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BackoffState } from '../../mta/delivery/backoff.ts';
import type { BackoffPolicy } from '../../mta/delivery/domain-settings.ts';

const policy: BackoffPolicy = { replyPatterns: [/^421/, /4\.7\.[0-9]+/], maxSmtpOut: 1, retryAfter: 1_800_000, returnAfter: 3_600_000 };

test('a matching reply enters backoff, a non-matching one does not', () => {
  const state = new BackoffState();
  assert.equal(state.onFailureReply(policy, '450 4.2.1 Mailbox busy', 0), false);
  assert.equal(state.isActive(policy, 0), false);
  assert.equal(state.onFailureReply(policy, '421 4.7.0 Too many messages, slow down', 1_000), true);
  assert.equal(state.isActive(policy, 2_000), true);
  assert.equal(state.since, 1_000);
});

test('backoff ends returnAfter after the last throttling reply', () => {
  const state = new BackoffState();
  state.onFailureReply(policy, '421 slow down', 0);
  assert.equal(state.onFailureReply(policy, '421 slow down', 1_000_000), false, 'already in backoff');
  assert.equal(state.isActive(policy, 4_599_999), true);
  assert.equal(state.isActive(policy, 4_600_000), false);
});

test('a delivery leaves backoff at once', () => {
  const state = new BackoffState();
  state.onFailureReply(policy, '421 slow down', 0);
  assert.equal(state.onDelivery(), true);
  assert.equal(state.isActive(policy, 1), false);
  assert.equal(state.onDelivery(), false);
});

test('without a backoff policy nothing enters backoff', () => {
  const state = new BackoffState();
  assert.equal(state.onFailureReply(undefined, '421 slow down', 0), false);
});
