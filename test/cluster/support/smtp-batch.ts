// Many messages through one SMTP session of Python's smtplib (a real client, as application code
// sends), each with its own Message-ID so a sink can count every message it receives.
import { run } from '../../fixtures/smtp-clients.ts';

export interface BatchOptions {
  host: string;
  port: number;
  from: string;
  to: string;
  /** Message-IDs (without angle brackets) of the messages to send, one message each. */
  messageIds: string[];
}

const SCRIPT = `
import json, smtplib, sys
o = json.loads(sys.stdin.read())
accepted = 0
with smtplib.SMTP(o['host'], o['port'], timeout=30) as client:
    client.ehlo('batch.test')
    for mid in o['messageIds']:
        client.sendmail(o['from'], [o['to']], 'From: <%s>\\r\\nTo: <%s>\\r\\nMessage-ID: <%s>\\r\\nSubject: %s\\r\\n\\r\\nqueued for the drain test\\r\\n' % (o['from'], o['to'], mid, mid))
        accepted += 1
print('OK', accepted)
`;

/** Sends every message or throws with smtplib's own error; returns how many the server accepted. */
export async function smtplibBatch(options: BatchOptions): Promise<number> {
  const result = await run('python3', ['-c', SCRIPT], JSON.stringify(options), 120_000);
  const accepted = /^OK (\d+)$/m.exec(result.stdout);
  if (!accepted) throw new Error(`smtplib to ${options.host}:${options.port} failed: ${result.stdout}${result.stderr}`);
  return Number(accepted[1]);
}

/** Message-IDs in the order a sink received them. */
export function messageIdsOf(bodies: Buffer[]): string[] {
  return bodies.map((body) => /^Message-ID:\s*<([^>]+)>/im.exec(body.toString('latin1'))?.[1] ?? '(none)');
}
