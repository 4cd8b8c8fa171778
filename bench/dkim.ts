// DKIM signing cost per message (prints figures; not a test): the relay's signer
// (mta/signing/dkim-signer.ts) against mailauth's dkimSign and nodemailer's DKIM stream, on the
// same 2 KiB and 50 KiB messages, rsa-sha256 (2048 bits) and ed25519-sha256 (nodemailer has no
// Ed25519). Sequential, one message at a time, after a warm-up: µs of wall time per message.
//
//   npm run bench:dkim [-- --messages 2000]
//
// Also exports the keys the relay benchmark (bench/relay.ts --dkim) signs with.
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { DkimAlgorithm, RuntimeConfigInput } from '../mta/config/schema.ts';
import { parseRuntimeConfig } from '../mta/config/parse.ts';
import { editHeaders } from '../mta/routing/message-headers.ts';
import { DkimSigner } from '../mta/signing/dkim-signer.ts';
import { temporaryDirectory } from '../test/fixtures/relay-process.ts';
import { buildBody } from './bench-smtp.ts';

export type BenchDkimMode = 'off' | 'rsa' | 'ed25519' | 'dual';

/** Writes fresh keys for example.com (the From domain of the bench messages) into `directory`; returns `pool.dkim`. */
export async function writeBenchDkimKeys(directory: string, mode: BenchDkimMode): Promise<RuntimeConfigInput['pool']['dkim']> {
  const algorithms: DkimAlgorithm[] = mode === 'off' ? [] : mode === 'rsa' ? ['rsa-sha256'] : mode === 'ed25519' ? ['ed25519-sha256'] : ['rsa-sha256', 'ed25519-sha256'];
  const keys = [];
  for (const algorithm of algorithms) {
    const { privateKey } = algorithm === 'rsa-sha256' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519');
    const keyFile = path.join(directory, `dkim-${algorithm}.pem`);
    await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    keys.push({ domain: 'example.com', selector: algorithm.startsWith('rsa') ? 'rsa' : 'ed', algorithm, keyFile });
  }
  return { keys };
}

async function time(count: number, sign: () => Promise<unknown>): Promise<number> {
  for (let index = 0; index < Math.min(200, count); index++) await sign();
  const start = process.hrtime.bigint();
  for (let index = 0; index < count; index++) await sign();
  return Number(process.hrtime.bigint() - start) / 1000 / count;
}

async function compare(count: number): Promise<void> {
  const { default: mailauthSign } = (await import('mailauth/lib/dkim/sign.js')) as unknown as { default: { dkimSign: (input: Buffer, options: object) => Promise<{ signatures: string; errors: unknown[] }> } };
  const { default: NodemailerDkim } = (await import('nodemailer/lib/dkim')) as unknown as { default: new (options: object) => { sign: (input: Readable) => Readable } };
  const keys = { rsa: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, ed25519: generateKeyPairSync('ed25519').privateKey };
  const pem = { rsa: keys.rsa.export({ type: 'pkcs8', format: 'pem' }) as string, ed25519: keys.ed25519.export({ type: 'pkcs8', format: 'pem' }) as string };
  const directory = await temporaryDirectory('vmta-bench-dkim-');
  console.log(`DKIM signing, ${count} messages each, µs/message (lower is better)`);
  console.log('size     algorithm        relay-signer  mailauth  nodemailer');
  for (const size of [2048, 51_200]) {
    const message = buildBody(size);
    for (const algorithm of ['rsa-sha256', 'ed25519-sha256'] as const) {
      const type = algorithm === 'rsa-sha256' ? 'rsa' : 'ed25519';
      const keyFile = path.join(directory.path, `${type}.pem`);
      await writeFile(keyFile, pem[type]);
      const config = parseRuntimeConfig(
        JSON.stringify({ apiVersion: 'vmta.dev/relay-config/v1', hostname: 'bench.test', pool: { name: 'bench', virtualMtas: [{ name: 'v', hostname: 'v.test' }], dkim: { keys: [{ domain: 'example.com', selector: 's', algorithm, keyFile }] } }, listeners: [], relayPolicies: [], spool: { path: 'spool' } }),
        'bench',
      );
      const signer = await DkimSigner.load(config);
      const ours = await time(count, async () => {
        const edit = editHeaders(message, Buffer.alloc(0));
        const outcome = await signer.sign(message, edit, 'v');
        if (outcome.kind !== 'signed') throw new Error(`relay signer did not sign: ${outcome.reason}`);
      });
      const theirs = await time(count, async () => {
        const result = await mailauthSign.dkimSign(message, { canonicalization: 'relaxed/relaxed', signatureData: [{ signingDomain: 'example.com', selector: 's', privateKey: pem[type], algorithm }] });
        if (result.errors.length > 0 || !result.signatures) throw new Error(`mailauth did not sign: ${JSON.stringify(result.errors)}`);
      });
      const nodemailer =
        type === 'rsa'
          ? await time(count, async () => {
              const stream = new NodemailerDkim({ domainName: 'example.com', keySelector: 's', privateKey: pem.rsa }).sign(Readable.from([message]));
              for await (const _chunk of stream);
            })
          : undefined;
      console.log(`${String(size).padEnd(8)} ${algorithm.padEnd(16)} ${ours.toFixed(0).padStart(12)}  ${theirs.toFixed(0).padStart(8)}  ${nodemailer === undefined ? 'no ed25519' : nodemailer.toFixed(0).padStart(10)}`);
    }
  }
  await directory.remove();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { messages: { type: 'string', default: '2000' } } });
  await compare(Number(values.messages));
}
