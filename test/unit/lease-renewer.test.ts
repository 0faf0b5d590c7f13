/**
 * The SDC's renewal batching (src/sdc/lease-renewer.ts): renewals due together share one request,
 * up to its count and byte limits; each gets its own outcome; a request refused as a whole makes
 * every window authorize afresh (undefined), an MDM that cannot be reached rejects them.
 */
import t from 'tap';
import { LeaseRenewer, RENEW_BATCH_BYTES_MAX, RENEW_TOKENS_PER_CALL_MAX, type RenewOutcome } from '../../src/sdc/lease-renewer.js';
import { HttpClientError } from '../../src/common/http-client.js';

// The renewer's timer does not hold a process open (unref): this test's loop is held here.
const keepAlive = setInterval(() => undefined, 1000);
t.teardown(() => clearInterval(keepAlive));

function lease(token: string): RenewOutcome {
  return { volume_id: 1, token, token_id: token.padEnd(32, '0').slice(0, 32), session_key: 'k', issued_at: '', expires_at: '', ttl_ms: 30_000 };
}

t.test('renewals due within the wait share one request, each answered in order', async (t) => {
  const calls: string[][] = [];
  const renewer = new LeaseRenewer(async (tokens) => {
    calls.push(tokens);
    return { leases: tokens.map((token, i) => (i === 1 ? { error: { code: 'PFLEX_ERR_PLAN_CHANGED', message: 'changed' } } : lease(token))) };
  });
  const outcomes = await Promise.all([0, 1, 2].map((i) => renewer.renew(Buffer.from(`token-${i}`), 50)));
  t.equal(calls.length, 1, 'one request');
  t.same(calls[0], [0, 1, 2].map((i) => Buffer.from(`token-${i}`).toString('base64')));
  t.equal((outcomes[0] as { token: string }).token, Buffer.from('token-0').toString('base64'));
  t.equal(outcomes[1], undefined, 'PLAN_CHANGED: authorize afresh');
  t.ok(outcomes[2] !== undefined);
});

t.test('a window planned again in the renewal gets its new plan; a PLAN_CHANGED without one authorizes', async (t) => {
  const plan = { token: 'new', token_id: 'ab'.repeat(16), session_key: 'k', issued_at: '', expires_at: '', ttl_ms: 30_000, chunk_first: 0, chunk_count: 1, chunks: [] };
  const renewer = new LeaseRenewer(async (tokens) => ({
    leases: tokens.map((_, i): RenewOutcome => (i === 0 ? { volume_id: 7, replanned: plan } : { error: { code: 'PFLEX_ERR_PLAN_CHANGED', message: 'changed' } })),
  }));
  const [replanned, changed] = await Promise.all([renewer.renew(Buffer.from('a'), 20), renewer.renew(Buffer.from('b'), 20)]);
  t.same(replanned, { volume_id: 7, replanned: plan }, 'the new plan goes to its window');
  t.equal(changed, undefined, 'no plan: the window authorizes afresh');
});

t.test('a full batch leaves at once; bytes split batches', async (t) => {
  const calls: number[] = [];
  const renewer = new LeaseRenewer(async (tokens) => {
    calls.push(tokens.length);
    return { leases: tokens.map(lease) };
  });
  const startedMs = Date.now();
  await Promise.all(Array.from({ length: RENEW_TOKENS_PER_CALL_MAX }, (_, i) => renewer.renew(Buffer.from(`t${i}`), 10_000)));
  t.same(calls, [RENEW_TOKENS_PER_CALL_MAX], 'one request of the maximum count');
  t.ok(Date.now() - startedMs < 5000, 'sent without waiting for the timer');
  calls.length = 0;
  const big = Buffer.alloc(Math.floor((RENEW_BATCH_BYTES_MAX / 3) * 0.75), 1); // 1/3 of the byte limit in base64
  await Promise.all([0, 1, 2, 3].map(() => renewer.renew(big, 20)));
  t.same(calls, [2, 2], 'no request over RENEW_BATCH_BYTES_MAX');
});

t.test('refused as a whole: authorize afresh; unreachable: rejected', async (t) => {
  const refusing = new LeaseRenewer(async () => {
    throw new HttpClientError('no such endpoint', 'PFLEX_ERR_NOT_FOUND', 404);
  });
  t.equal(await refusing.renew(Buffer.from('x'), 1), undefined, 'an MDM without /io/renew: the window authorizes');
  const down = new LeaseRenewer(async () => {
    throw new HttpClientError('connect ECONNREFUSED', 'ECONNREFUSED');
  });
  await t.rejects(down.renew(Buffer.from('x'), 1), /ECONNREFUSED/, 'the MDM could not be asked: the renewal is retried');
  const closing = new LeaseRenewer(async () => ({ leases: [] }));
  const pending = closing.renew(Buffer.from('x'), 10_000);
  closing.close();
  t.equal(await pending, undefined, 'closed: pending renewals end');
});
