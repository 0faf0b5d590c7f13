/**
 * Boots the kernel-client test guest (scripts/vm/build-guest.sh builds it) under qemu TCG and
 * collects the `PFLEX-RESULT <step> ok|fail ...` lines its /init (scripts/vm/guest-init.sh) prints
 * on the serial console. The guest reaches the host's loopback as 10.0.2.2 through qemu's user
 * network, so an SDC listening on 127.0.0.1 serves it. Nothing leaves this machine.
 *
 *   node dist/scripts/vm/run-guest.js --port 10809 --export vol1 [--connections 4] [--mode soak --soak-s 30]
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The repository root, from dist/scripts/vm/run-guest.js (or scripts/vm/run-guest.ts). */
const here = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = existsSync(join(here, '../../package.json')) ? resolve(here, '../..') : resolve(here, '../../..');
export const BUILD_GUEST_SCRIPT = join(REPO_ROOT, 'scripts/vm/build-guest.sh');

export function guestDir(): string {
  return process.env.PFLEX_VM_DIR ?? join(REPO_ROOT, '.cache/vm');
}

export interface GuestArtifacts {
  readonly kernel: string;
  readonly initrd: string;
  readonly kernelRelease: string;
}

export interface BuildGuestResult {
  readonly ok: boolean;
  readonly artifacts?: GuestArtifacts;
  readonly output: string;
}

/** Runs build-guest.sh (idempotent; fast when nothing changed). */
export function buildGuest(timeoutMs = 15 * 60_000): BuildGuestResult {
  const run = spawnSync('bash', [BUILD_GUEST_SCRIPT], {
    env: { ...process.env, PFLEX_VM_DIR: guestDir(), DEBIAN_FRONTEND: 'noninteractive' },
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
    encoding: 'utf8',
  });
  const output = `${run.stdout ?? ''}${run.stderr ?? ''}${run.error ? `\n${run.error.message}` : ''}`;
  if (run.status !== 0) return { ok: false, output };
  const artifacts = readGuestArtifacts();
  return artifacts === undefined ? { ok: false, output: `${output}\nno guest.env after the build` } : { ok: true, artifacts, output };
}

/** The artifacts of the last build, from guest.env in the cache dir. */
export function readGuestArtifacts(dir = guestDir()): GuestArtifacts | undefined {
  const file = join(dir, 'guest.env');
  if (!existsSync(file)) return undefined;
  const env = new Map<string, string>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const index = line.indexOf('=');
    if (index > 0) env.set(line.slice(0, index), line.slice(index + 1));
  }
  const kernel = env.get('PFLEX_VM_KERNEL');
  const initrd = env.get('PFLEX_VM_INITRD');
  if (kernel === undefined || initrd === undefined || !existsSync(kernel) || !existsSync(initrd)) return undefined;
  return { kernel, initrd, kernelRelease: env.get('PFLEX_VM_KERNEL_RELEASE') ?? '' };
}

export interface RunGuestOptions {
  /** The SDC's NBD port on the host's loopback. */
  readonly nbdPort: number;
  /** The export (volume) name. */
  readonly exportName: string;
  /** nbd-client -C: 1 (default) or more connections. */
  readonly connections?: number;
  /** basic (default): write a set of files once; soak: write in a loop for soakSeconds. */
  readonly mode?: 'basic' | 'soak';
  readonly soakSeconds?: number;
  /** basic mode: how many random-size files (default 20) and the big file's MiB (default 32). */
  readonly files?: number;
  readonly bigMiB?: number;
  /** nbd-client -t (seconds). */
  readonly nbdTimeoutS?: number;
  /** The whole run, boot to power-off; the guest is killed (by PID) past it. */
  readonly timeoutMs: number;
  readonly memoryMiB?: number;
  readonly artifacts?: GuestArtifacts;
  /** Every serial console line as it arrives (for live logs). */
  readonly onLine?: (line: string) => void;
  /** Kills the guest (by PID) when aborted: a test that ends early leaves no qemu behind. */
  readonly signal?: AbortSignal;
}

export interface RunGuestResult {
  /** Every step ok, `done ok` seen, and qemu exited on its own. */
  readonly ok: boolean;
  /** step → the rest of its PFLEX-RESULT line, e.g. verify → "ok files=21 t=40.2". */
  readonly results: Record<string, string>;
  readonly serialLog: string;
  readonly timedOut: boolean;
  readonly exitCode: number | null;
  readonly durationMs: number;
}

const RESULT_LINE = /PFLEX-RESULT (\S+) (ok|fail)\b ?(.*)$/;

/** Parses PFLEX-RESULT lines (later lines of the same step win). */
export function parseResults(serialLog: string): Record<string, string> {
  const results: Record<string, string> = {};
  for (const raw of serialLog.split(/\r?\n/)) {
    const match = RESULT_LINE.exec(raw.replace(/\r/g, ''));
    if (match === null) continue;
    const rest = match[3]!.trim();
    results[match[1]!] = rest.length > 0 ? `${match[2]} ${rest}` : match[2]!;
  }
  return results;
}

export function runGuest(options: RunGuestOptions): Promise<RunGuestResult> {
  const artifacts = options.artifacts ?? readGuestArtifacts();
  if (artifacts === undefined) throw new Error(`no guest in ${guestDir()}: run scripts/vm/build-guest.sh`);
  const append = [
    'console=ttyS0',
    'quiet',
    'panic=-1',
    `pflex.nbd_port=${options.nbdPort}`,
    `pflex.export=${options.exportName}`,
    `pflex.connections=${options.connections ?? 1}`,
    `pflex.mode=${options.mode ?? 'basic'}`,
    // The guest powers itself off a little after the host would kill it, should the host die.
    `pflex.deadline_s=${Math.ceil(options.timeoutMs / 1000) + 10}`,
  ];
  if (options.soakSeconds !== undefined) append.push(`pflex.soak_s=${options.soakSeconds}`);
  if (options.files !== undefined) append.push(`pflex.files=${options.files}`);
  if (options.bigMiB !== undefined) append.push(`pflex.big_mib=${options.bigMiB}`);
  if (options.nbdTimeoutS !== undefined) append.push(`pflex.nbd_timeout=${options.nbdTimeoutS}`);
  const args = [
    '-accel', 'tcg',
    '-m', String(options.memoryMiB ?? 512),
    '-smp', '1',
    '-nographic',
    '-no-reboot',
    '-kernel', artifacts.kernel,
    '-initrd', artifacts.initrd,
    '-append', append.join(' '),
    '-netdev', 'user,id=n0',
    // romfile=: no iPXE option ROM (not needed for -kernel boots).
    '-device', 'virtio-net-pci,netdev=n0,romfile=',
  ];
  const started = Date.now();
  return new Promise((resolveRun, reject) => {
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let serialLog = '';
    let pending = '';
    let timedOut = false;
    const onData = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      serialLog += text;
      if (options.onLine !== undefined) {
        pending += text;
        const lines = pending.split(/\r?\n/);
        pending = lines.pop() ?? '';
        for (const line of lines) options.onLine(line.replace(/\r/g, ''));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const killGuest = (): void => {
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGuest();
    }, options.timeoutMs);
    if (options.signal?.aborted === true) killGuest();
    options.signal?.addEventListener('abort', killGuest);
    child.on('error', (error) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', killGuest);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', killGuest);
      if (pending.length > 0) options.onLine?.(pending);
      const results = parseResults(serialLog);
      const allOk = Object.values(results).every((value) => value.startsWith('ok'));
      resolveRun({
        ok: !timedOut && allOk && results.done?.startsWith('ok') === true,
        results,
        serialLog,
        timedOut,
        exitCode: code,
        durationMs: Date.now() - started,
      });
    });
  });
}

/** The few steps every run must pass, in the order the guest does them. */
export const REQUIRED_STEPS = ['boot', 'modules', 'net', 'connect', 'mkfs', 'mount', 'write', 'umount', 'disconnect', 'reconnect', 'remount', 'verify', 'e2fsck', 'disconnect2', 'dmesg', 'done'] as const;

async function main(argv: readonly string[]): Promise<number> {
  const flags = new Map<string, string>();
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index]!;
    if (!arg.startsWith('--')) continue;
    const value = argv[index + 1];
    if (value === undefined || value.startsWith('--')) {
      flags.set(arg.slice(2), '');
    } else {
      flags.set(arg.slice(2), value);
      index += 1;
    }
  }
  const port = Number(flags.get('port'));
  const exportName = flags.get('export');
  if (!Number.isInteger(port) || exportName === undefined) {
    console.error('usage: run-guest --port PORT --export NAME [--connections N] [--mode basic|soak] [--soak-s S] [--timeout-s S] [--build]');
    return 2;
  }
  if (flags.has('build')) {
    const build = buildGuest();
    if (!build.ok) {
      console.error(build.output);
      return 1;
    }
  }
  const mode = flags.get('mode') === 'soak' ? 'soak' : 'basic';
  const result = await runGuest({
    nbdPort: port,
    exportName,
    connections: Number(flags.get('connections') ?? 1),
    mode,
    ...(flags.has('soak-s') ? { soakSeconds: Number(flags.get('soak-s')) } : {}),
    timeoutMs: Number(flags.get('timeout-s') ?? 300) * 1000,
    onLine: (line) => console.log(line),
  });
  console.log(JSON.stringify({ ok: result.ok, timedOut: result.timedOut, durationMs: result.durationMs, results: result.results }, null, 2));
  return result.ok ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
}
