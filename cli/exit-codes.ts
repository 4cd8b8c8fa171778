// What every `vmta` command's exit status means, and the one error type that carries it: a
// command that fails prints one line (what failed, what to do) and exits with its kind's code.
export const EXIT = {
  ok: 0,
  /** Anything not below: a relay that could not start, a port in use, an error of the relay itself. */
  failed: 1,
  /** A bad command line or invalid input (config, resources). */
  usage: 2,
  /** The admin API could not be reached (connection refused, no such host, timeout). */
  unreachable: 3,
  /** The relay refused the call: no admin token, a wrong one, or one not allowed to do this. */
  refused: 4,
  /** No such queue id, VirtualMTA or suppressed address. */
  notFound: 5,
} as const;

export type ExitKind = keyof typeof EXIT;

/** The exit codes as `vmta --help` and the README list them. */
export const EXIT_CODES_HELP = `exit codes:
  0  done
  1  failed otherwise (a relay that could not start, a port in use, an error of the relay)
  2  bad command line or invalid input (config, resources)
  3  the relay's admin API cannot be reached
  4  refused: no admin token, a wrong one, or one that may not do this
  5  not found: no such queue id, VirtualMTA or suppressed address`;

/** Signals that stop a long-running command (mta, local, operator) cleanly. */
export const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

export class CliError extends Error {
  readonly kind: ExitKind;
  constructor(kind: ExitKind, message: string) {
    super(message);
    this.name = 'CliError';
    this.kind = kind;
  }
}
