// The login of a smarthost route: the `username` and `password` files of a mounted Secret (the
// keys of a kubernetes.io/basic-auth Secret), read at every session so a rotated Secret is used
// by the next connection without a reload. Errors name the file, never its content.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { SMARTHOST_SECRET_KEYS } from '../config/schema.ts';

export interface SmarthostLogin {
  user: string;
  pass: string;
}

async function readKey(secretPath: string, key: string): Promise<string> {
  const file = path.join(secretPath, key);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new Error(`smarthost credentials: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const value = text.replace(/\r?\n$/, '');
  if (value === '') throw new Error(`smarthost credentials: ${file} is empty`);
  if (/[\r\n]/.test(value)) throw new Error(`smarthost credentials: ${file} holds more than one line`);
  return value;
}

/** Throws an Error naming the unusable file. */
export async function readSmarthostLogin(secretPath: string): Promise<SmarthostLogin> {
  const [user, pass] = await Promise.all(SMARTHOST_SECRET_KEYS.map((key) => readKey(secretPath, key)));
  return { user: user!, pass: pass! };
}
