// Who holds a TCP port: the listening socket's inode from /proc/net/tcp{,6}, then the process
// whose file descriptors include it (Linux; processes of other users are not readable without
// root, and another system says nothing). For one-line "port in use" errors.
import { readdir, readFile, readlink } from 'node:fs/promises';

const LISTEN_STATE = '0A';

async function listeningInodes(port: number): Promise<Set<string>> {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const localPort = Number.parseInt(fields[1]?.split(':')[1] ?? '', 16);
      if (localPort === port && fields[3] === LISTEN_STATE && fields[9] && fields[9] !== '0') inodes.add(fields[9]);
    }
  }
  return inodes;
}

/** "pid 1234 (node cli/vmta.ts local examples/)", or undefined when it cannot be told. */
export async function describePortHolder(port: number): Promise<string | undefined> {
  const inodes = await listeningInodes(port);
  if (inodes.size === 0) return undefined;
  const sockets = new Set([...inodes].map((inode) => `socket:[${inode}]`));
  for (const pid of (await readdir('/proc').catch(() => [] as string[])).filter((name) => /^\d+$/.test(name))) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (!sockets.has(target)) continue;
      const command = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean).join(' ');
      return `pid ${pid}${command ? ` (${command.length > 120 ? `${command.slice(0, 117)}...` : command})` : ''}`;
    }
  }
  return undefined;
}
