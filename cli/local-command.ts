// `vmta local DIR`: the resources of DIR (SmtpListener, RelayPolicy, VirtualMtaPool, Secret
// YAML) rendered as the operator would and run as local relay processes, reloaded on every
// edit. The way to send a first message without a cluster.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_LOCAL_WORK_DIR } from '../operator/local/local-admin-token.ts';
import { LocalMode, LocalModeError } from '../operator/local/local-mode.ts';
import { PRIVILEGED_PORT_OFFSET } from '../operator/render/layout.ts';
import { STOP_SIGNALS } from './exit-codes.ts';

const USAGE = `usage: vmta local [DIR] [--work-dir DIR] [--port-shift N] [--no-watch]

Reads the vmta.dev resources and Secrets of DIR (default examples/), validates them with the
same schemas as the cluster, renders each VirtualMtaPool's relay config exactly as the operator
would, and runs one relay per pool on 127.0.0.1. Ports below 1024 get +${PRIVILEGED_PORT_OFFSET}, as in the pods
(25 -> ${25 + PRIVILEGED_PORT_OFFSET}, 587 -> ${587 + PRIVILEGED_PORT_OFFSET}, 465 -> ${465 + PRIVILEGED_PORT_OFFSET}; 2525 stays). Saving a file applies it: live where the relay
can take it, by restarting the pool's relay where a pod would be replaced.

options:
  --work-dir DIR    local state: Secret files, rendered configs, spools (default .tmp/local)
  --port-shift N    add N to every port, to run several copies side by side (default 0)
  --no-watch        do not reload when files change
  -h, --help        show this help`;

export async function runLocalCommand(argv: string[]): Promise<void> {
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: { 'work-dir': { type: 'string' }, 'port-shift': { type: 'string' }, 'no-watch': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    }));
  } catch (error) {
    console.error(`vmta local: ${(error as Error).message}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const portShift = Number(values['port-shift'] ?? '0');
  if (!Number.isInteger(portShift) || portShift < 0 || portShift > 50_000 || positionals.length > 1) {
    console.error(`vmta local: ${positionals.length > 1 ? 'one resource directory only' : `--port-shift: a whole number from 0 to 50000 (got "${values['port-shift']}")`}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  const resourceDir = positionals[0] ?? 'examples';
  const log = (line: string) => console.log(line);
  let local: LocalMode;
  try {
    local = await LocalMode.start({ resourceDir, workDir: path.resolve(values['work-dir'] ?? DEFAULT_LOCAL_WORK_DIR), portShift, watch: !values['no-watch'], log });
  } catch (error) {
    console.error(`vmta local: ${error instanceof LocalModeError ? error.message : (error as Error).message}`);
    process.exitCode = error instanceof LocalModeError ? 2 : 1;
    return;
  }
  console.log(values['no-watch'] ? 'running; Ctrl-C stops' : `watching ${resourceDir} for changes; Ctrl-C stops`);
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    console.log('stopping the relays');
    local.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(`vmta local: ${(error as Error).message}`);
        process.exit(1);
      },
    );
  };
  for (const signal of STOP_SIGNALS) process.on(signal, stop);
}
