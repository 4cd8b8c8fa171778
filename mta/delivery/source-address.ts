// Whether a VirtualMTA's source address exists on this host: binding it is the only reliable
// test (an address missing from every interface fails with EADDRNOTAVAIL), done once at start
// and on reload so a misconfigured VirtualMTA is reported instead of failing every message.
import net from 'node:net';

/** undefined when the address can be bound, otherwise why not. */
export async function probeSourceAddress(address: string): Promise<string | undefined> {
  const server = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, address, () => resolve());
    });
    return undefined;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return `source address ${address} cannot be bound on this host (${code ?? (error as Error).message})`;
  } finally {
    if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
