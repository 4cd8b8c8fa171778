// The CPUs the relay may use (mta/cpu-allowance.ts): cgroup v2 cpu.max contents of every form,
// written to a real file, against several affinities; malformed contents fail naming the file.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cpuAllowance, parseCpuMax } from '../../mta/cpu-allowance.ts';

describe('cpu allowance', () => {
  let directory = '';
  before(async () => {
    directory = await mkdtemp(path.join(tmpdir(), 'vmta-cpu-'));
  });
  after(() => rm(directory, { recursive: true, force: true }));

  async function allowance(content: string | undefined, affinity: number) {
    const file = path.join(directory, `cpu.max-${Math.random().toString(36).slice(2)}`);
    if (content !== undefined) await writeFile(file, content);
    return cpuAllowance(file, affinity);
  }

  it('takes the affinity when there is no quota or no cpu.max', async () => {
    for (const affinity of [1, 2, 8]) {
      assert.deepEqual(await allowance('max 100000\n', affinity), { cpus: affinity, source: 'affinity' });
      assert.deepEqual(await allowance(undefined, affinity), { cpus: affinity, source: 'affinity' });
    }
  });

  it('bounds the affinity by the quota, whole CPUs only and at least one', async () => {
    const cases: Array<[string, number, number, string]> = [
      // cpu.max, affinity, expected cpus, expected source
      ['200000 100000', 8, 2, 'cgroup quota'],
      ['150000 100000', 8, 1, 'cgroup quota'],
      ['50000 100000', 4, 1, 'cgroup quota'],
      ['400000 100000', 2, 2, 'affinity'],
      ['300000 100000', 3, 3, 'affinity'],
      ['1000000 250000', 16, 4, 'cgroup quota'],
    ];
    for (const [content, affinity, cpus, source] of cases) {
      const result = await allowance(`${content}\n`, affinity);
      assert.equal(result.cpus, cpus, `${content} with affinity ${affinity}`);
      assert.equal(result.source, source, `${content} with affinity ${affinity}`);
    }
  });

  it('rejects contents that are not a cpu.max line, naming the file and what it holds', async () => {
    for (const content of ['', 'max', '100000', 'abc 100000', '100000 0', '0 100000', '-5 100000', '100000 100000 7']) {
      assert.throws(() => parseCpuMax(content, '/x/cpu.max'), (error: Error) => error.message.startsWith('/x/cpu.max: ') && error.message.includes(JSON.stringify(content.trim())), content);
      await assert.rejects(allowance(content, 2), /cpu\.max-/);
    }
  });
});
