// A smarthost login is read from the `username` and `password` files of a mounted Secret (one
// trailing newline ignored, the `..data` symlink layout of a kubelet mount followed); every way
// the files can be unusable is an error naming the file and never its content.
import assert from 'node:assert/strict';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { readSmarthostLogin } from '../../mta/delivery/smarthost-credentials.ts';
import { temporaryDirectory } from '../fixtures/relay-process.ts';

let directory: { path: string; remove: () => Promise<void> };
before(async () => {
  directory = await temporaryDirectory('vmta-smarthost-login-');
});
after(() => directory.remove());

async function secretDir(name: string, files: Record<string, string>): Promise<string> {
  const dir = path.join(directory.path, name);
  await mkdir(path.join(dir, '..data'), { recursive: true });
  for (const [key, value] of Object.entries(files)) {
    await writeFile(path.join(dir, '..data', key), value);
    await symlink(path.join('..data', key), path.join(dir, key));
  }
  return dir;
}

test('the login is read through the kubelet symlinks, one trailing newline ignored', async () => {
  assert.deepEqual(await readSmarthostLogin(await secretDir('good', { username: 'apikey\n', password: 'SG.key with spaces\r\n' })), { user: 'apikey', pass: 'SG.key with spaces' });
  assert.deepEqual(await readSmarthostLogin(await secretDir('bare', { username: 'u', password: 'p' })), { user: 'u', pass: 'p' });
});

test('a missing, empty or multi-line key is refused naming the file, never its content', async () => {
  for (const [name, files, pattern] of [
    ['no-password', { username: 'apikey' }, /no-password\/password: ENOENT/],
    ['no-username', { password: 'hidden-value-1' }, /no-username\/username: ENOENT/],
    ['empty', { username: 'apikey', password: '\n' }, /empty\/password is empty/],
    ['two-lines', { username: 'apikey', password: 'hidden-value-2\nsecond\n' }, /two-lines\/password holds more than one line/],
  ] as const) {
    const dir = await secretDir(name, files);
    await assert.rejects(readSmarthostLogin(dir), (error: Error) => {
      assert.match(error.message, pattern);
      assert.ok(!/hidden-value/.test(error.message), error.message);
      return true;
    });
  }
  const gone = await secretDir('gone', { username: 'u', password: 'p' });
  await rm(gone, { recursive: true });
  await assert.rejects(readSmarthostLogin(gone), /smarthost credentials: cannot read .*gone\/(username|password): ENOENT/);
});
