// Postfix as a store-and-forward relay for the benchmark's comparison run: its own config,
// queue and data directories under a temporary directory, smtpd on a non-25 loopback port,
// everything relayed to `relayhost = [127.0.0.1]:<sink port>`, stock performance settings,
// daemons not chrooted (the queue lives outside /var/spool). Detects Postfix; never installs it.
import { execFile } from 'node:child_process';
import { access, chmod, chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const POSTFIX = '/usr/sbin/postfix';

export interface PostfixRelay {
  port: number;
  /** PID of the master process (its daemons are its children). */
  masterPid: number;
  stop(): Promise<void>;
}

/** Why Postfix cannot be used here, or undefined when it can (installed, and we are root as `postfix start` needs). */
export async function postfixUnavailable(): Promise<string | undefined> {
  try {
    await access(POSTFIX);
  } catch {
    return `${POSTFIX} not installed (Debian package "postfix")`;
  }
  if (userInfo().uid !== 0) return 'postfix start needs root';
  return undefined;
}

const MASTER_SERVICES = `
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;

/** Start Postfix under `directory` (made traversable for the postfix user) listening on 127.0.0.1:port. */
export async function startPostfixRelay(directory: string, port: number, sinkPort: number): Promise<PostfixRelay> {
  const conf = path.join(directory, 'conf');
  const queue = path.join(directory, 'queue');
  const data = path.join(directory, 'data');
  await Promise.all([conf, queue, data].map((dir) => mkdir(dir, { recursive: true })));
  await chmod(directory, 0o755);
  const { stdout: ids } = await run('id', ['-u', 'postfix']);
  await chown(data, Number(ids.trim()), 0);
  await writeFile(path.join(conf, 'main.cf'), [
    'compatibility_level = 3.6',
    `config_directory = ${conf}`,
    `queue_directory = ${queue}`,
    `data_directory = ${data}`,
    'mail_owner = postfix',
    'setgid_group = postdrop',
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    'myhostname = postfix.bench.test',
    'mydestination =',
    'mynetworks = 127.0.0.0/8',
    `relayhost = [127.0.0.1]:${sinkPort}`,
    'smtpd_relay_restrictions = permit_mynetworks, reject',
    'smtpd_tls_security_level = none',
    'smtp_tls_security_level = none',
    'alias_maps =',
    'alias_database =',
    'local_recipient_maps =',
    'maillog_file_prefixes = /tmp, /var',
    `maillog_file = ${path.join(data, 'maillog')}`,
    '',
  ].join('\n'));
  await writeFile(path.join(conf, 'master.cf'), `127.0.0.1:${port} inet n - n - - smtpd\n${MASTER_SERVICES}`);
  await run(POSTFIX, ['-c', conf, 'start']);
  const masterPid = Number((await readFile(path.join(queue, 'pid', 'master.pid'), 'utf8')).trim());
  return {
    port,
    masterPid,
    async stop() {
      await run(POSTFIX, ['-c', conf, 'stop']).catch(() => undefined);
    },
  };
}
