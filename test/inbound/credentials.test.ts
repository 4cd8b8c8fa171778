// The users directory of a relay policy: clear and {SCRYPT} secrets, Kubernetes Secret layout.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { CredentialStore, hashPassword } from '../../mta/inbound/credentials.ts';
import { writeUsersDir } from './harness.ts';

describe('CredentialStore', () => {
  test('reads clear and {SCRYPT} secrets, ignores dotfiles and ..data, verifies both', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vmta-users-'));
    try {
      writeUsersDir(dir, { clear: 'pa55word', hashed: hashPassword('s3cret', { N: 1024 }) });
      const store = await CredentialStore.load(dir);
      assert.equal(store.size, 2);
      assert.equal(await store.verifyPassword('clear', 'pa55word'), true);
      assert.equal(await store.verifyPassword('clear', 'pa55wor'), false);
      assert.equal(await store.verifyPassword('hashed', 's3cret'), true);
      assert.equal(await store.verifyPassword('hashed', 'wrong'), false);
      assert.equal(await store.verifyPassword('..data', ''), false);
      assert.deepEqual(store.count(), { users: 2, clearUsers: 1 });
      assert.equal(store.verifyCramMd5('hashed', () => true), false, 'CRAM-MD5 needs a clear secret');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a malformed {SCRYPT} secret is refused with the file name', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vmta-users-'));
    try {
      writeFileSync(path.join(dir, 'broken'), '{SCRYPT}not-a-hash');
      await assert.rejects(CredentialStore.load(dir), new RegExp(`user file ${dir}/broken: expected \\{SCRYPT\\}N\\$r\\$p\\$salt\\$key`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
